//! BoringSSL, as gRPC ships it (Python's `grpcio`), in the interop matrix.
//!
//! Each case is one mutual-TLS gRPC call over loopback with gRPC's stock TLS credentials: the
//! server requires a client certificate and BoringSSL verifies the client's chain against the
//! bundle; gRPC then exposes the client's SPIFFE ID as `peer_spiffe_id` (its own SPIFFE rule:
//! exactly one URI SAN, a valid SPIFFE ID), which the server compares with the one expected.
//! The client verifies the server's chain with BoringSSL and then, as gRPC always does, its
//! host name: stock credentials cannot accept a URI-only SVID (docs/interop.md), so the server
//! presents the same key's SVID issued under an identity-policy rule that adds a Service DNS
//! name ([`super::Case::server_named`]), the name the client dials. Ok holds grpcio's version.

use super::Case;
use crate::oracles::Verdict;

pub fn handshakes(cases: &[Case]) -> Vec<Verdict> {
    const SCRIPT: &str = r#"
import os
os.environ["GRPC_VERBOSITY"] = "NONE"  # refusals are the verdicts; gRPC need not log them too
import grpc
from concurrent import futures
def cases(cases): return cases
def method(name):
    return grpc.method_handlers_generic_handler("interop", {name: grpc.unary_unary_rpc_method_handler(
        handlers[name], request_deserializer=bytes, response_serializer=lambda b: b)})
seen = {}
def check_peer(request, context):
    ids = context.auth_context().get("peer_spiffe_id", [])
    seen["client"] = [i.decode() for i in ids]
    return b"ok"
handlers = {"Check": check_peer}
def check(case):
    b = lambda s: s.encode()
    server_party, client = case["server_named"], case["client"]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((method("Check"),))
    creds = grpc.ssl_server_credentials([(b(server_party["key_pem"]), b(server_party["chain_pem"]))],
                                        root_certificates=b(case["roots_pem"]), require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    seen.clear()
    try:
        channel = grpc.secure_channel(f"127.0.0.1:{port}",
            grpc.ssl_channel_credentials(b(case["roots_pem"]), b(client["key_pem"]), b(client["chain_pem"])),
            options=[("grpc.ssl_target_name_override", case["server_name"])])
        try:
            channel.unary_unary("/interop/Check", request_serializer=lambda x: x,
                                response_deserializer=bytes)(b"x", timeout=10)
        except grpc.RpcError as e:
            raise ValueError(f"client: {e.code().name}: {e.details()}")
        finally:
            channel.close()
        if seen.get("client") != [client["spiffe_id"]]:
            raise ValueError(f"server: the client is {seen.get('client')}")
    finally:
        server.stop(None)
    return grpc.__version__
"#;
    super::python_handshakes(
        SCRIPT,
        cases,
        "is `grpcio` installed? scripts/test installs it",
    )
}
