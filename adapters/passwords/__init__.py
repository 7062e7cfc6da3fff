"""Password hashing (argon2id, argon2-cffi) and the shipped blocklist of common passwords."""
