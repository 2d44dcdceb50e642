from atelier_profiles.main import cli

cli()
