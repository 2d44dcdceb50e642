from atelier_context.main import cli

cli()
