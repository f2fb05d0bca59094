"""A minimal PostgreSQL client (protocol 3, simple queries, trust authentication only).

The harness needs a few things psql makes awkward: a transaction held open while the load runs
(a lock that makes a table unavailable), then committed on cue, and many small queries without
a process each. Python's standard library has no PostgreSQL driver, and the throwaway cluster
trusts local connections, so the wire protocol's simple-query subset is enough.
"""

import socket
import struct


class PgError(Exception):
    def __init__(self, fields):
        self.fields = fields
        self.code = fields.get("C", "")
        super().__init__(f"{fields.get('S', 'ERROR')} {self.code}: {fields.get('M', '?')}")


class Pg:
    def __init__(self, port, database, user="postgres", host="127.0.0.1", application_name="cluster-harness",
                 timeout=30.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""
        params = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in
                          (("user", user), ("database", database), ("application_name", application_name)))
        body = struct.pack("!i", 196608) + params + b"\0"
        self.sock.sendall(struct.pack("!i", len(body) + 4) + body)
        while True:
            kind, payload = self._read()
            if kind == b"R":
                (code,) = struct.unpack("!i", payload[:4])
                if code != 0:
                    raise PgError({"M": f"authentication method {code} is not supported (trust only)"})
            elif kind == b"E":
                raise PgError(_fields(payload))
            elif kind == b"Z":
                return

    def _recv_exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("PostgreSQL closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _read(self):
        head = self._recv_exact(5)
        kind = head[:1]
        (length,) = struct.unpack("!i", head[1:])
        return kind, self._recv_exact(length - 4)

    def query(self, sql):
        """Run one or more statements; the rows of the last result (text values, None for NULL)."""
        body = sql.encode() + b"\0"
        self.sock.sendall(b"Q" + struct.pack("!i", len(body) + 4) + body)
        rows, error = [], None
        while True:
            kind, payload = self._read()
            if kind == b"T":
                rows = []
            elif kind == b"D":
                (n,) = struct.unpack("!h", payload[:2])
                pos, row = 2, []
                for _ in range(n):
                    (size,) = struct.unpack("!i", payload[pos:pos + 4])
                    pos += 4
                    if size < 0:
                        row.append(None)
                    else:
                        row.append(payload[pos:pos + size].decode())
                        pos += size
                rows.append(tuple(row))
            elif kind == b"E":
                error = PgError(_fields(payload))
            elif kind == b"Z":
                if error:
                    raise error
                return rows
            # C (command complete), N (notice), S (parameter status), A (notification), I: ignored

    def scalar(self, sql):
        rows = self.query(sql)
        return rows[0][0] if rows else None

    def close(self):
        try:
            self.sock.sendall(b"X" + struct.pack("!i", 4))
        except OSError:
            pass
        self.sock.close()


def _fields(payload):
    out = {}
    for part in payload.split(b"\0"):
        if part:
            out[chr(part[0])] = part[1:].decode(errors="replace")
    return out


def lit(value):
    """A SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"
