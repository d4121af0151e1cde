"""Data: raster I/O (the only module that opens rasters), input scaling, datasets."""
