"""``costplan serve``: a local web page and a JSON API over the very CLI commands.

``args`` turns query parameters into a CLI argument list (no web framework needed), ``workers`` runs
the click commands in worker processes with a time limit, ``app`` is the Starlette application, and
``static/`` holds the page. Nothing here is imported by the other commands.
"""
