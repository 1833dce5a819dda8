// Java's JSSE as a SPIFFE workload uses it, for podcert-signer's interop matrix
// (tests/src/interop). Each case is a directory holding two SVIDs (server.pem and client.pem:
// the chain, leaf first; server.key and client.key: PKCS#8 PEM; server.id and client.id: the
// SPIFFE ID each peer must see) and roots.pem (the trust bundle). For each, one mutual TLS
// handshake over loopback: the server requires a client certificate, both sides verify the
// peer's chain with the PKIX trust manager against the bundle (which checks the extended key
// usage of the peer's role), no host name is checked (SVIDs carry none), and each side reads
// the peer's SPIFFE ID from its single URI SAN, as java-spiffe does. Prints one line per case:
// "<case>\t" followed by nothing when both sides accepted, or what went wrong.
//
//   java Handshake.java <case-dir>...     (JDK 11+ runs a single source file directly)

import java.io.ByteArrayInputStream;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyFactory;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.security.spec.PKCS8EncodedKeySpec;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collection;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLServerSocket;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.TrustManagerFactory;

public class Handshake {
    private static final Pattern PEM =
            Pattern.compile("-----BEGIN ([A-Z ]+)-----([^-]+)-----END \\1-----");

    private static List<byte[]> pemBlocks(String text, String label) {
        List<byte[]> out = new ArrayList<>();
        Matcher m = PEM.matcher(text);
        while (m.find()) {
            if (m.group(1).equals(label)) {
                out.add(Base64.getMimeDecoder().decode(m.group(2)));
            }
        }
        return out;
    }

    private static X509Certificate[] certificates(String pem) throws Exception {
        CertificateFactory cf = CertificateFactory.getInstance("X.509");
        List<X509Certificate> out = new ArrayList<>();
        for (byte[] der : pemBlocks(pem, "CERTIFICATE")) {
            out.add((X509Certificate) cf.generateCertificate(new ByteArrayInputStream(der)));
        }
        return out.toArray(new X509Certificate[0]);
    }

    private static PrivateKey privateKey(String pem) throws Exception {
        PKCS8EncodedKeySpec spec = new PKCS8EncodedKeySpec(pemBlocks(pem, "PRIVATE KEY").get(0));
        Exception last = null;
        for (String algorithm : new String[] {"EC", "RSA", "Ed25519"}) {
            try {
                return KeyFactory.getInstance(algorithm).generatePrivate(spec);
            } catch (Exception e) {
                last = e;
            }
        }
        throw last;
    }

    private static String read(Path dir, String name) throws Exception {
        return Files.readString(dir.resolve(name), StandardCharsets.UTF_8).trim();
    }

    /// A TLS 1.2/1.3 context presenting `side`'s SVID and trusting only the bundle.
    private static SSLContext context(Path dir, String side) throws Exception {
        KeyStore keys = KeyStore.getInstance("PKCS12");
        keys.load(null, null);
        char[] password = "interop".toCharArray();
        keys.setKeyEntry(
                "svid",
                privateKey(read(dir, side + ".key")),
                password,
                certificates(read(dir, side + ".pem")));
        KeyManagerFactory kmf = KeyManagerFactory.getInstance("PKIX");
        kmf.init(keys, password);
        KeyStore roots = KeyStore.getInstance("PKCS12");
        roots.load(null, null);
        int n = 0;
        for (X509Certificate root : certificates(read(dir, "roots.pem"))) {
            roots.setCertificateEntry("root-" + n++, root);
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance("PKIX");
        tmf.init(roots);
        SSLContext ctx = SSLContext.getInstance("TLS");
        ctx.init(kmf.getKeyManagers(), tmf.getTrustManagers(), null);
        return ctx;
    }

    /// The SPIFFE ID of the peer's leaf: its single URI SAN, a spiffe:// URI.
    private static String spiffeId(Certificate[] peer) throws Exception {
        Collection<List<?>> names = ((X509Certificate) peer[0]).getSubjectAlternativeNames();
        List<String> uris = new ArrayList<>();
        if (names != null) {
            for (List<?> name : names) {
                if (((Integer) name.get(0)) == 6) {
                    uris.add((String) name.get(1));
                }
            }
        }
        if (uris.size() != 1 || !uris.get(0).startsWith("spiffe://")) {
            throw new Exception("an X.509-SVID has exactly one spiffe:// URI SAN, this one " + uris);
        }
        return uris.get(0);
    }

    private static String describe(Throwable e) {
        StringBuilder s = new StringBuilder(e.toString());
        for (Throwable c = e.getCause(); c != null; c = c.getCause()) {
            s.append(" <- ").append(c);
        }
        return s.toString().replace('\n', ' ').replace('\t', ' ');
    }

    private static String handshake(Path dir) {
        List<String> problems = new ArrayList<>();
        try {
            String serverId = read(dir, "server.id");
            String clientId = read(dir, "client.id");
            SSLContext serverCtx = context(dir, "server");
            SSLContext clientCtx = context(dir, "client");
            try (SSLServerSocket listener = (SSLServerSocket) serverCtx.getServerSocketFactory()
                    .createServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
                listener.setNeedClientAuth(true);
                CompletableFuture<String> served = CompletableFuture.supplyAsync(() -> {
                    try (SSLSocket conn = (SSLSocket) listener.accept()) {
                        conn.setSoTimeout(10_000);
                        conn.startHandshake();
                        InputStream in = conn.getInputStream();
                        in.read();
                        String peer = spiffeId(conn.getSession().getPeerCertificates());
                        return peer.equals(clientId) ? "" : "the client is " + peer + ", not " + clientId;
                    } catch (Exception e) {
                        return describe(e);
                    }
                });
                try (SSLSocket conn = (SSLSocket) clientCtx.getSocketFactory()
                        .createSocket(InetAddress.getLoopbackAddress(), listener.getLocalPort())) {
                    conn.setSoTimeout(10_000);
                    conn.startHandshake();
                    String peer = spiffeId(conn.getSession().getPeerCertificates());
                    if (!peer.equals(serverId)) {
                        problems.add("client: the server is " + peer + ", not " + serverId);
                    }
                    OutputStream out = conn.getOutputStream();
                    out.write('x');
                    out.flush();
                } catch (Exception e) {
                    problems.add("client: " + describe(e));
                }
                String server = served.get(20, TimeUnit.SECONDS);
                if (!server.isEmpty()) {
                    problems.add("server: " + server);
                }
            }
        } catch (Exception e) {
            problems.add(describe(e));
        }
        return String.join("; ", problems);
    }

    public static void main(String[] args) {
        for (String arg : args) {
            Path dir = Path.of(arg);
            System.out.println(dir.getFileName() + "\t" + handshake(dir));
        }
    }
}
