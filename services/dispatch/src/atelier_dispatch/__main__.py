from atelier_dispatch.main import cli

cli()
