"""Runs one query over allot's Arrow Flight SQL endpoint through TLS, with the
ADBC Flight SQL driver trusting the test's certificate, and tries the same
endpoint without TLS; prints what it saw as one JSON object.

    python flight_sql_tls_check.py HOST:PORT CERTIFICATE_PEM SQL

The token comes from ALLOT_TENANT_TOKEN.
"""

import json
import os
import sys

import adbc_driver_flightsql.dbapi as flight_sql
from adbc_driver_flightsql import DatabaseOptions

address, certificate, sql = sys.argv[1:4]
token = os.environ["ALLOT_TENANT_TOKEN"]
with open(certificate) as pem:
    roots = pem.read()


def run(uri, options):
    options = {DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}", **options}
    with flight_sql.connect(uri, db_kwargs=options) as conn:
        with conn.cursor() as cursor:
            cursor.execute(sql)
            table = cursor.fetch_arrow_table()
    columns = [column.to_pylist() for column in table.columns]
    return [[None if v is None else str(v) for v in row] for row in zip(*columns)]


out = {"tls": run(f"grpc+tls://{address}", {DatabaseOptions.TLS_ROOT_CERTS.value: roots})}
try:
    run(f"grpc://{address}", {})
    out["plain"] = None
except Exception as error:  # the driver's error: no TLS, no answer
    out["plain"] = str(error)
print(json.dumps(out))
