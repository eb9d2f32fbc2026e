"""Content-addressed attachment storage: one async interface, a local and an S3 backend."""

from storage.blobs.base import (
    SHA256_PATTERN,
    BlobError,
    BlobHashMismatch,
    BlobInfo,
    BlobNotFound,
    BlobStore,
    BlobStoreUnavailable,
    BlobStream,
    BlobTooLarge,
    PartInfo,
    PartRejected,
    Sha256,
    Upload,
    UploadIncomplete,
    UploadNotFound,
)
from storage.blobs.local import LocalBlobStore
from storage.blobs.s3 import S3BlobStore

__all__ = [
    "SHA256_PATTERN",
    "BlobError",
    "BlobHashMismatch",
    "BlobInfo",
    "BlobNotFound",
    "BlobStore",
    "BlobStoreUnavailable",
    "BlobStream",
    "BlobTooLarge",
    "LocalBlobStore",
    "PartInfo",
    "PartRejected",
    "S3BlobStore",
    "Sha256",
    "Upload",
    "UploadIncomplete",
    "UploadNotFound",
]
