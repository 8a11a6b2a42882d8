"""The HTTP edge: Starlette routes for each API dialect over the one `Service`."""
