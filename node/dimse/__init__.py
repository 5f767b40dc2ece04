"""The DICOM network service: the Application Entity, handlers, transport."""
