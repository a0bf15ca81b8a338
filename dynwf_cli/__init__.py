"""The ``dynwf`` command line: thin commands over ``emulator``, rendered with rich."""
