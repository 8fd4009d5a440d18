"""cffi declarations of vendor C libraries and their C mocks."""
