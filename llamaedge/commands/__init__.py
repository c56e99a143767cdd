"""One module per `llamaedge` subcommand."""
