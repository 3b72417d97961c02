"""What every part of sritm shares and nothing else: the serving contract and the colour science.

Imports no other project package and no torch (``make test`` checks this with
import-linter), so the client SDK, the Triton models, the build tools and the
training code can all depend on it.
"""
