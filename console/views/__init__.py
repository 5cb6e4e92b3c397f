"""One module per console page; each exposes ``render(ctx)``. The files in ``pages/``
only draw the frame and call one of these."""
