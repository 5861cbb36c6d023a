"""Moto's S3 over HTTPS, as a second, independent S3 implementation for the remote blob store tests.

    python tests/moto_s3.py CERT KEY     prints the port it listens on (127.0.0.1), then serves
"""

import sys

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server


def main():
    cert, key = sys.argv[1], sys.argv[2]
    # The service is told by each request's SigV4 scope (s3).
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=(cert, key))
    print(server.port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
