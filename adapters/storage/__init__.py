"""Blob storage: the BlobStore port on obstore (S3, GCS, Azure, local files, memory).

`factory.blob_store_from_url` picks the store from `PICTOR_STORAGE_URL`; `link_signer.LinkSigner`
makes and checks the HMAC download links of the stores that cannot presign. This package's
`__init__` imports nothing, so the in-memory fake can share the link signer and the key rules
without loading obstore.
"""
