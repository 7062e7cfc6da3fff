"""Secret sources: environment variables, a directory of files, and a chain of both."""

from adapters.secrets.chain import ChainedSecrets
from adapters.secrets.env import EnvSecrets
from adapters.secrets.files import FileSecrets

__all__ = ["ChainedSecrets", "EnvSecrets", "FileSecrets"]
