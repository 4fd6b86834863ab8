"""The control plane's shells: store, API server, controllers' runner, config push, CA."""
