"""flowherd's contracts: pydantic models, the error tree, settings and Redis key names.

Nothing here does I/O or imports another flowherd package.
"""
