// Command-line options of the load generators (mix.mjs, campus.mjs): `--name value` pairs
// and bare `--flag`s (true).
export function readOptions(argv) {
  const options = {};
  for (let i = 0; i < argv.length; i += 1) {
    if (!argv[i].startsWith('--')) continue;
    const name = argv[i].slice(2);
    const next = argv[i + 1];
    options[name] = next !== undefined && !next.startsWith('--') ? argv[(i += 1)] : true;
  }
  const number = (name, fallback) => (options[name] === undefined ? fallback : Number(options[name]));
  return { options, number };
}
