from atelier_cli.main import cli

cli()
