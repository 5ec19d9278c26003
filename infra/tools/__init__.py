"""Developer tools that are not deployed: data generation and the like."""
