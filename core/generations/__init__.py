"""Image generations: the aggregate's lifecycle, the validation of new requests, the prompt policy
and the metadata of uploaded init images. Pure rules; the use cases that apply them live beside."""
