// UnionLedger redemption receipts, verified in the member's browser (docs/formats.md section 6,
// the same steps as verifier/receipt.py's verify_entry_receipt). Nothing of the server is
// trusted here but the log's public key, which the app pins the first time it sees it.
//
// A receipt (JSON, "unionledger-receipt/1") holds the exact entry bytes (base64), the entry's
// index, its RFC 9162 inclusion proof and the log's signed checkpoint (a C2SP signed note):
//   1. the checkpoint note is signed by the pinned key: a signature line
//      "— <name> <base64(4-byte key id || 64-byte Ed25519 signature)>" whose name and key id
//      (SHA-256(name || 0x0A || 0x01 || public key)[:4]) are the pinned key's, and whose
//      signature verifies (WebCrypto Ed25519) over the note body (the text up to the last
//      blank line, its final newline included);
//   2. the body is a checkpoint: origin (the key's name), tree size, base64 root hash;
//   3. the index is inside the tree, and the inclusion proof leads from the leaf hash
//      SHA-256(0x00 || entry) to the root (RFC 9162 section 2.1.3.2);
//   4. the entry is JSON that names the same index, and (verifyRedemptionReceipt) it is a
//      RedemptionRecorded of this member, of the redemption the app lists.
// Every failure throws a ReceiptError whose code names the step (the page translates it).

export const RECEIPT_FORMAT = "unionledger-receipt/1";
export const REDEMPTION_TYPE = "RedemptionRecorded";
const MEMBERS = ["checkpoint", "entry", "format", "inclusion", "index"];
const SIGNATURE_PREFIX = "\u2014 "; // EM DASH, SPACE
const SIGNATURE_TYPE_ED25519 = 0x01;
const KEY_ID_SIZE = 4;
const ED25519_KEY_SIZE = 32;
const ED25519_SIGNATURE_SIZE = 64;
const HASH_SIZE = 32;
const MAX_PROOF_HASHES = 64;
const MAX_SIGNATURES = 100;
const MAX_TREE_SIZE = 2n ** 64n - 1n;
const CONTROL = /[\u0000-\u0009\u000b-\u001f]/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const DECIMAL = /^(?:0|[1-9][0-9]{0,19})$/;
const HEX_KEY_ID = /^[0-9a-fA-F]{8}$/;

export class ReceiptError extends Error {
  constructor(code, params = {}) {
    super(code);
    this.name = "ReceiptError";
    this.code = code;
    this.params = params;
  }
}

// -- bytes --------------------------------------------------------------------------------------

const utf8 = new TextEncoder();

function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

function sameBytes(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

async function sha256(...parts) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", concat(parts)));
}

export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function b64Encode(bytes) {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text);
}

/** Standard padded base64, its canonical form only (as verifier/note.py's b64decode_strict). */
export function b64Decode(text) {
  if (typeof text !== "string" || !BASE64.test(text)) throw new Error("not standard base64");
  const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  if (b64Encode(bytes) !== text) throw new Error("not canonical base64");
  return bytes;
}

function wellFormed(text) {
  return typeof text === "string" && !CONTROL.test(text) && (text.isWellFormed?.() ?? true);
}

function checkKeyName(name) {
  return wellFormed(name) && name.length > 0 && !name.includes("+") && !/\s/u.test(name);
}

// -- the log's key ------------------------------------------------------------------------------

/** The key id of an Ed25519 note key: SHA-256(name || 0x0A || 0x01 || key)[:4]. */
export async function noteKeyId(name, publicRaw) {
  const material = concat([utf8.encode(name), Uint8Array.of(0x0a, SIGNATURE_TYPE_ED25519)]);
  return (await sha256(material, publicRaw)).slice(0, KEY_ID_SIZE);
}

/**
 * Parse the log's verifier key string `<name>+<8 hex key id>+<base64(0x01 || 32-byte key)>`
 * (GET /v1/log/public-key; one final newline allowed): { text, name, keyId, publicRaw,
 * cryptoKey, fingerprint }. The key id in the string must be the one computed (a checksum).
 * The fingerprint is SHA-256 of the key string, its first 16 bytes in groups of 4 hex digits.
 */
export async function parseVerifierKey(raw) {
  const bad = (why) => new ReceiptError("bad-key", { detail: why });
  if (typeof raw !== "string") throw bad("not text");
  const text = raw.endsWith("\n") ? raw.slice(0, -1) : raw;
  const first = text.indexOf("+");
  const second = first < 0 ? -1 : text.indexOf("+", first + 1);
  if (second < 0) throw bad("not <name>+<key id>+<key>");
  const name = text.slice(0, first);
  const hexId = text.slice(first + 1, second);
  if (!checkKeyName(name)) throw bad("bad key name");
  if (!HEX_KEY_ID.test(hexId)) throw bad("key id is not 8 hex digits");
  let material;
  try {
    material = b64Decode(text.slice(second + 1));
  } catch {
    throw bad("key is not base64");
  }
  if (material.length !== 1 + ED25519_KEY_SIZE || material[0] !== SIGNATURE_TYPE_ED25519) {
    throw bad("not an Ed25519 note key");
  }
  const publicRaw = material.slice(1);
  const keyId = await noteKeyId(name, publicRaw);
  if (hex(keyId) !== hexId.toLowerCase()) throw bad("key id does not match the key");
  let cryptoKey;
  try {
    cryptoKey = await crypto.subtle.importKey("raw", publicRaw, { name: "Ed25519" }, false, [
      "verify",
    ]);
  } catch (e) {
    if (e?.name === "NotSupportedError") throw new ReceiptError("unsupported");
    throw bad("not an Ed25519 public key");
  }
  const digest = hex((await sha256(utf8.encode(text))).slice(0, 16));
  const fingerprint = digest.match(/.{4}/g).join(" ");
  return { text, name, keyId, publicRaw, cryptoKey, fingerprint };
}

// -- signed notes and checkpoints ---------------------------------------------------------------

/** Split a C2SP signed note into its body and signature lines, verifying nothing. */
export function parseNote(note) {
  const bad = (why) => new ReceiptError("bad-note", { detail: why });
  if (!wellFormed(note)) throw bad("not text, or control characters");
  const split = note.lastIndexOf("\n\n");
  if (split < 0) throw bad("no blank line before the signatures");
  const text = note.slice(0, split + 1);
  const block = note.slice(split + 2);
  if (!block) throw bad("no signature lines");
  if (!block.endsWith("\n")) throw bad("no final newline");
  const lines = block.slice(0, -1).split("\n");
  if (lines.length > MAX_SIGNATURES) throw bad("too many signatures");
  const signatures = lines.map((line) => {
    if (!line.startsWith(SIGNATURE_PREFIX)) throw bad("a signature line without its em dash");
    const rest = line.slice(SIGNATURE_PREFIX.length);
    const space = rest.indexOf(" ");
    if (space < 0) throw bad("a signature line without a key name");
    const name = rest.slice(0, space);
    if (!checkKeyName(name)) throw bad("a bad key name");
    let raw;
    try {
      raw = b64Decode(rest.slice(space + 1));
    } catch {
      throw bad("a signature that is not base64");
    }
    if (raw.length <= KEY_ID_SIZE) throw bad("a signature too short");
    return { name, keyId: raw.slice(0, KEY_ID_SIZE), signature: raw.slice(KEY_ID_SIZE) };
  });
  return { text, signatures };
}

/**
 * The note's body if `key` signed it. As c2sp.org/signed-note says: lines of other keys are
 * ignored, every line of the pinned key (its name and key id) must verify, and one must exist.
 */
export async function openNote(note, key) {
  const { text, signatures } = parseNote(note);
  const message = utf8.encode(text);
  let verified = false;
  for (const sig of signatures) {
    if (sig.name !== key.name || !sameBytes(sig.keyId, key.keyId)) continue;
    const ok =
      sig.signature.length === ED25519_SIGNATURE_SIZE &&
      (await crypto.subtle.verify({ name: "Ed25519" }, key.cryptoKey, sig.signature, message));
    if (!ok) throw new ReceiptError("bad-signature", { name: key.name });
    verified = true;
  }
  if (!verified && signatures.some((s) => s.name === key.name)) {
    throw new ReceiptError("other-key", { name: key.name }); // the name, not the key
  }
  if (!verified) throw new ReceiptError("not-signed", { name: key.name });
  return text;
}

/** A checkpoint body: { origin, size (BigInt), root (32 bytes), extensions }. */
export function parseCheckpoint(body) {
  const bad = (why) => new ReceiptError("bad-checkpoint", { detail: why });
  if (!body.endsWith("\n")) throw bad("no final newline");
  const lines = body.slice(0, -1).split("\n");
  if (lines.length < 3) throw bad("fewer than three lines");
  if (lines.some((line) => !line)) throw bad("an empty line");
  const [origin, sizeText, rootText, ...extensions] = lines;
  if (!DECIMAL.test(sizeText)) throw bad("the size is not a decimal");
  const size = BigInt(sizeText);
  if (size > MAX_TREE_SIZE) throw bad("the size is out of range");
  let root;
  try {
    root = b64Decode(rootText);
  } catch {
    throw bad("the root hash is not base64");
  }
  if (root.length !== HASH_SIZE) throw bad("the root hash is not 32 bytes");
  return { origin, size, root, extensions };
}

// -- Merkle trees (RFC 6962 / RFC 9162) ---------------------------------------------------------

export function leafHash(entry) {
  return sha256(Uint8Array.of(0x00), entry);
}

/** The root that `proof` implies for `leaf` at `index` in a tree of `size` (BigInts). */
export async function rootFromInclusionProof(leaf, index, size, proof) {
  // 1. index < size (checked by the caller, with its own message). 2. fn, sn. 3. r.
  if (!(index >= 0n && index < size)) throw new ReceiptError("index-outside");
  let fn = index;
  let sn = size - 1n;
  let r = leaf;
  // 4. each p of the path, leaf's sibling first
  for (const p of proof) {
    if (sn === 0n) throw new ReceiptError("proof-length");
    if ((fn & 1n) === 1n || fn === sn) {
      r = await sha256(Uint8Array.of(0x01), p, r);
      while (fn !== 0n && (fn & 1n) === 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      r = await sha256(Uint8Array.of(0x01), r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  // 5. sn reached 0: the path was as long as the tree is deep.
  if (sn !== 0n) throw new ReceiptError("proof-length");
  return r;
}

// -- receipts -----------------------------------------------------------------------------------

/** Parse a receipt object (the API's `receipt`, or the JSON file) as Receipt.from_json does. */
export function parseReceipt(doc) {
  const bad = (why) => new ReceiptError("bad-format", { detail: why });
  if (!doc || typeof doc !== "object" || Array.isArray(doc)) throw bad("not an object");
  if (doc.format !== RECEIPT_FORMAT) throw bad(`format is not ${RECEIPT_FORMAT}`);
  const names = Object.keys(doc).sort();
  if (names.length !== MEMBERS.length || names.some((n, i) => n !== MEMBERS[i])) {
    throw bad("members are not checkpoint, entry, format, inclusion, index");
  }
  if (!Number.isSafeInteger(doc.index) || doc.index < 0) throw bad("index");
  let entry;
  try {
    entry = b64Decode(doc.entry);
  } catch {
    throw bad("entry is not base64");
  }
  if (!Array.isArray(doc.inclusion) || doc.inclusion.length > MAX_PROOF_HASHES) {
    throw bad("inclusion is not a list of at most 64 hashes");
  }
  const inclusion = doc.inclusion.map((node) => {
    let bytes;
    try {
      bytes = b64Decode(node);
    } catch {
      throw bad("an inclusion hash is not base64");
    }
    if (bytes.length !== HASH_SIZE) throw bad("an inclusion hash is not 32 bytes");
    return bytes;
  });
  if (typeof doc.checkpoint !== "string") throw bad("checkpoint is not text");
  return { index: doc.index, entry, inclusion, checkpoint: doc.checkpoint };
}

/**
 * Verify a receipt against the pinned log key (from parseVerifierKey): what verify_receipt does.
 * Returns { index, size (decimal string), origin, root (bytes), entry (bytes) }.
 */
export async function verifyReceipt(doc, key) {
  const receipt = parseReceipt(doc);
  const body = await openNote(receipt.checkpoint, key);
  const checkpoint = parseCheckpoint(body);
  if (checkpoint.origin !== key.name) {
    throw new ReceiptError("origin", { origin: checkpoint.origin, name: key.name });
  }
  const index = BigInt(receipt.index);
  const size = checkpoint.size.toString();
  if (index >= checkpoint.size) throw new ReceiptError("index-outside", { index, size });
  const computed = await rootFromInclusionProof(
    await leafHash(receipt.entry),
    index,
    checkpoint.size,
    receipt.inclusion,
  );
  if (!sameBytes(computed, checkpoint.root)) throw new ReceiptError("root-mismatch", { size });
  return {
    index: receipt.index,
    size,
    origin: checkpoint.origin,
    root: checkpoint.root,
    entry: receipt.entry,
  };
}

/** The entry's JSON, which must name the receipt's index (verify_entry_receipt). */
export function parseEntry(bytes, index) {
  let value;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    throw new ReceiptError("entry-malformed");
  }
  if (!value || typeof value !== "object" || Array.isArray(value)) {
    throw new ReceiptError("entry-malformed");
  }
  if (value.index !== index) {
    throw new ReceiptError("entry-index", { found: String(value.index), index });
  }
  if (!value.body || typeof value.body !== "object" || Array.isArray(value.body)) {
    throw new ReceiptError("entry-malformed");
  }
  return value;
}

/**
 * Verify the receipt of a redemption the app lists: verifyReceipt, then the entry is the
 * RedemptionRecorded at that redemption's index (a redemption's id is its entry's index), of
 * `memberId`, and says what the list says (program, station, quantity, value).
 * `redemption`: the API's redemption object. Returns verifyReceipt's answer and the entry.
 */
export async function verifyRedemptionReceipt(doc, key, { memberId, redemption }) {
  const verified = await verifyReceipt(doc, key);
  if (verified.index !== redemption.redemption) {
    const params = { index: verified.index, redemption: redemption.redemption };
    throw new ReceiptError("not-this", params);
  }
  const entry = parseEntry(verified.entry, verified.index);
  if (entry.type !== REDEMPTION_TYPE) throw new ReceiptError("entry-type", { type: entry.type });
  if (typeof memberId !== "string" || entry.body.member !== memberId) {
    throw new ReceiptError("entry-member");
  }
  const listed = {
    program: redemption.program,
    station: redemption.station,
    quantity: redemption.quantity,
    value: redemption.value,
  };
  for (const [field, value] of Object.entries(listed)) {
    if (entry.body[field] !== value) throw new ReceiptError("entry-mismatch", { field });
  }
  return { ...verified, entry };
}

/** The receipt as a file for `unionledger verify-receipt FILE`: keys sorted, no whitespace. */
export function receiptFileText(doc) {
  const sorted = {};
  for (const name of MEMBERS) sorted[name] = doc[name];
  return JSON.stringify(sorted);
}
