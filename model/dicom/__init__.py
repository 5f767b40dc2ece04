"""DICOM encoding: reading and writing SROs, the structure walker, File Meta, PS3.4 statuses."""
