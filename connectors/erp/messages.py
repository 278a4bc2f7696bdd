"""What a dropzone push or connection test reports when it fails, the same words for
each transport (SFTP, the issuer's own filesystem). Kept apart from the SFTP client so
that loading the connector does not load the SSH library."""

AUTHENTICATION_FAILED = "Authentication failed"
CONNECTION_TIMEOUT = "Connection timeout"
PERMISSION_DENIED = "Permission denied"
HOST_KEY_MISMATCH = "Host key verification failed: the server's host key is not host_key"
EXPORT_PATH_NOT_FOUND = "Export path not found"
CONNECTION_REFUSED = "Host unreachable: connection refused"
#: A name that does not resolve, or resolves to no address the policy permits.
HOST_NOT_RESOLVED = "Host unreachable: name not found or not a public address"
HOST_UNREACHABLE = "Host unreachable"
SSH_FAILED = "SSH connection failed"
FILE_EXISTS = "A file of that name exists already"
