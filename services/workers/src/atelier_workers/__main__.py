from atelier_workers.main import cli

cli()
