"""C mock libraries with the vendor ABIs (built by setup.py; cffi dlopens them, nothing imports
them). See ``qkdnode.bindings.mock_library_path``."""
