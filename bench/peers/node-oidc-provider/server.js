// node-oidc-provider as the reference server of the token benchmark
// (bench/side_by_side.py): the client_credentials grant only, RS256 JWT access
// tokens for one default resource (RFC 9068 format, not stored), one client
// authenticated with client_secret_basic, a node:cluster of --workers processes
// on 127.0.0.1 only.
//
//   npm ci
//   PEER_CLIENT_ID=bench PEER_CLIENT_SECRET=... node server.js --port 3000 --workers 2
//
// The primary generates the signing key (RSA-2048) and hands it to every worker,
// so that all of them sign with the key the JWKS publishes. It prints one line,
// "peer: ready ...", once every worker listens, and stops them on SIGTERM/SIGINT.

import cluster from 'node:cluster';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

const USAGE = 'usage: node server.js --port PORT [--workers N] [--client-id ID] '
  + '[--client-secret SECRET] [--resource URI] [--scope SCOPES]\n'
  + '  (the client id and secret may come from PEER_CLIENT_ID / PEER_CLIENT_SECRET)';

function options() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        port: { type: 'string' },
        workers: { type: 'string', default: '1' },
        'client-id': { type: 'string', default: process.env.PEER_CLIENT_ID },
        'client-secret': { type: 'string', default: process.env.PEER_CLIENT_SECRET },
        resource: { type: 'string', default: 'https://api.bench.test' },
        scope: { type: 'string', default: 'read write' },
        help: { type: 'boolean', default: false },
      },
    }));
  } catch (error) {
    fail(error.message);
  }
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const port = Number(values.port);
  const workers = Number(values.workers);
  if (!Number.isInteger(port) || port < 1 || port > 65535) fail('--port must be 1..65535');
  if (!Number.isInteger(workers) || workers < 1 || workers > 64) fail('--workers must be 1..64');
  if (!values['client-id'] || !values['client-secret']) {
    fail('a client id and secret are required (--client-id/--client-secret or '
      + 'PEER_CLIENT_ID/PEER_CLIENT_SECRET)');
  }
  return {
    port,
    workers,
    clientId: values['client-id'],
    clientSecret: values['client-secret'],
    resource: values.resource,
    scope: values.scope,
  };
}

function fail(message) {
  console.error(`peer: ${message}\n${USAGE}`);
  process.exit(2);
}

const HOST = '127.0.0.1';
const config = options();

if (cluster.isPrimary) {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = {
    ...privateKey.export({ format: 'jwk' }),
    kid: randomBytes(8).toString('hex'),
    alg: 'RS256',
    use: 'sig',
  };
  const env = {
    PEER_JWK: JSON.stringify(jwk),
    PEER_COOKIE_KEY: randomBytes(32).toString('hex'),
  };
  let listening = 0;
  let stopping = false;
  for (let index = 0; index < config.workers; index += 1) {
    cluster.fork(env);
  }
  cluster.on('listening', () => {
    listening += 1;
    if (listening === config.workers) {
      console.log(`peer: ready http://${HOST}:${config.port} workers=${config.workers} `
        + `pid=${process.pid} oidc-provider`);
    }
  });
  cluster.on('exit', (worker, code, signal) => {
    if (!stopping) {
      console.error(`peer: worker ${worker.process.pid} exited (${signal ?? code}); stopping`);
      stop(1);
    }
  });
  const stop = (status) => {
    stopping = true;
    for (const worker of Object.values(cluster.workers)) worker.process.kill('SIGTERM');
    process.exitCode = status;
  };
  process.on('SIGTERM', () => stop(0));
  process.on('SIGINT', () => stop(0));
} else {
  const { default: Provider, errors } = await import('oidc-provider');
  const jwk = JSON.parse(process.env.PEER_JWK);
  const ttl = 3600;

  const provider = new Provider(`http://${HOST}:${config.port}`, {
    clients: [{
      client_id: config.clientId,
      client_secret: config.clientSecret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    jwks: { keys: [jwk] },
    cookies: { keys: [process.env.PEER_COOKIE_KEY] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // No `resource` parameter in the request: the token is for this one.
        defaultResource: () => config.resource,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resourceIndicator) => {
          if (resourceIndicator !== config.resource) throw new errors.InvalidTarget();
          return {
            scope: config.scope,
            audience: config.resource,
            accessTokenTTL: ttl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    ttl: {
      AccessToken: ttl,
      ClientCredentials: ttl,
      // Unused by this grant; set so that the provider does not warn about them.
      AuthorizationCode: 60,
      BackchannelAuthenticationRequest: 600,
      DeviceCode: 600,
      Grant: 3600,
      IdToken: 3600,
      Interaction: 3600,
      RefreshToken: 86400,
      Session: 86400,
    },
  });
  provider.on('server_error', (ctx, error) => {
    console.error(`peer: server_error ${error.stack ?? error}`);
  });
  provider.listen(config.port, HOST);
  // A clean exit (not death by signal), so that `node --cpu-prof` writes its profile.
  process.on('SIGTERM', () => process.exit(0));
}
