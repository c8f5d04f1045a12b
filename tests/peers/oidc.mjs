// An OpenID provider nobody here wrote: node's `oidc-provider` (certified implementation),
// serving discovery, its JWKS and client-credentials access tokens in JWT format over https
// with a certificate of the test's CA. Arguments: cert.pem key.pem kid [port].
// Prints `READY listen=127.0.0.1:<port> issuer=https://localhost:<port>`.
import https from 'node:https';
import fs from 'node:fs';
import crypto from 'node:crypto';
import Provider from 'oidc-provider';

const [, , certFile, keyFile, kid, wantedPort] = process.argv;
const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid, alg: 'ES256', use: 'sig' };
const server = https.createServer({ cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) });

server.listen(Number(wantedPort || 0), '127.0.0.1', () => {
  const port = server.address().port;
  const issuer = `https://localhost:${port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: 'railgate-test',
      client_secret: 'railgate-test-secret',
      grant_types: ['client_credentials'],
      id_token_signed_response_alg: 'ES256',
      redirect_uris: [],
      response_types: [],
    }],
    jwks: { keys: [jwk] },
    features: {
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => 'urn:railgate',
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: 'chat',
          audience: 'railgate',
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        }),
      },
    },
    extraTokenClaims: () => ({ tenant_id: 't_a' }),
  });
  server.on('request', provider.callback());
  console.log(`READY listen=127.0.0.1:${port} issuer=${issuer}`);
});
