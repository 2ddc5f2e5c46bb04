"""The ``vfiolab`` command line."""
