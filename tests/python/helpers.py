"""What the kvtier package's tests share (pytest puts this directory on
sys.path)."""
SECRET = b"kvtier-test-secret-0123"
PAGE = 8192


def fill(i, n=PAGE):
    """Page i's bytes: different for each i."""
    return bytes((i * 31 + j) % 251 for j in range(256)) * (n // 256)


def keys_of(ns, n, salt=0):
    """The keys of n blocks of a prompt of tokens salt, salt + 1, ..."""
    return ns.prompt_keys(range(salt, salt + 16 * n), SECRET)
