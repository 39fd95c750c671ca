"""The doors: where inputs enter the gateway (DICOM, hot folder, HTTP); each calls Intake."""
