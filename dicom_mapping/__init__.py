"""Pure functions that turn a clinical photo (or a DICOM object) into a de-identified DICOM object.

Bytes and datasets in, bytes and datasets out: nothing here opens a socket, reads a config file
or touches a path it was not given. The only outside program used is `jpegtran`, over pipes.
"""
