// Real certificates for TLS tests, made with openssl (installed by scripts/test): a CA, and a
// server certificate for 127.0.0.1 and localhost signed by it.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function openssl(args) {
  execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A fresh CA; `issue(name)` signs a certificate for 127.0.0.1 and localhost with it. */
export function makeCa() {
  const dir = mkdtempSync(join(tmpdir(), 'switchboard-tls-'));
  const ca = join(dir, 'ca.crt');
  const caKey = join(dir, 'ca.key');
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=switchboard test CA', '-keyout', caKey, '-out', ca]);
  let serial = 0;
  return {
    dir,
    ca,
    /** { cert, key } files of a new certificate named `name`. */
    issue(name) {
      serial += 1;
      const [key, csr, cert, ext] = ['key', 'csr', 'crt', 'ext'].map((suffix) => join(dir, `${name}.${suffix}`));
      writeFileSync(ext, 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
      openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${name}`, '-keyout', key, '-out', csr]);
      openssl(['x509', '-req', '-days', '2', '-in', csr, '-CA', ca, '-CAkey', caKey, '-set_serial', String(serial), '-out', cert, '-extfile', ext]);
      return { cert, key };
    },
  };
}
