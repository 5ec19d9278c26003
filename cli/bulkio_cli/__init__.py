"""bulkio: the command line of the bulk import/export API. It holds no logic the API does not have: it uploads,
polls and downloads through the REST API (BULKIO_API, BULKIO_TOKEN), with progress bars on a terminal."""
