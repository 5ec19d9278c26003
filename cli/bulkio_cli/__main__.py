from bulkio_cli.main import cli

cli()
