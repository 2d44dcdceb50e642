from atelier_gateway.main import cli

if __name__ == "__main__":
    cli()
