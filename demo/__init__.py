"""``make demo``'s end-to-end script (``python -m demo.convert_sample``).

It starts the server, so it is not part of the client package.
"""
