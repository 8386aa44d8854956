"""The ``nasrobust`` command line; one module per command family."""
