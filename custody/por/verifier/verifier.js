/* The public proof-of-reserves verifier: a customer's proof file checked against the statement published in
 * this page, entirely in the browser. The rules are docs/proof-of-reserves.md's, and custody/por/verify.py is
 * the reference: the same files are accepted and refused, each refusal here with a plain-language reason.
 *
 * SHA-256 is the browser's own (WebCrypto, crypto.subtle.digest), available on pages served over a secure connection and on pages
 * opened from a file; balances are BigInt (u64 leaves, u128 sums), never floating point. Nothing is fetched:
 * the statement is in the page (a <script type="application/json"> element) and the proof is read from the
 * file the customer picks or the text they paste. Everything shown is set with textContent.
 */
"use strict";

const custodyVerifier = (() => {
  const U64 = 1n << 64n;
  const U128 = 1n << 128n;
  const MIN_PIECES = 2;
  const MAX_PIECES = 4;
  const MAX_INDEX = 2 ** 53;
  const PROOF_KIND = "custody-por-proof";
  const STATEMENT_KIND = "custody-por-statement";
  const HEX64 = /^[0-9a-f]{64}$/;
  const AMOUNT = /^(0|[1-9][0-9]{0,77})$/; // base units: digits, no leading zero, at most 78 of them
  const LONE_SURROGATE = /\p{Cs}/u;
  const utf8 = new TextEncoder();

  /** A proof the page refuses: ``code`` is stable (tests and translations key on it), the message is for people. */
  class Refusal extends Error {
    constructor(code, message) {
      super(message);
      this.name = "Refusal";
      this.code = code;
    }
  }

  // -- bytes and hashing -------------------------------------------------------------------------------------
  function fromHex(hex) {
    const out = new Uint8Array(hex.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
    return out;
  }

  function toHex(bytes) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function concat(parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  /** ``value`` as ``width`` bytes big-endian; a value that does not fit is a bug of the caller, never wrapped. */
  function uint(value, width) {
    let v = BigInt(value);
    if (v < 0n || v >= 1n << BigInt(8 * width)) throw new RangeError(`${value} does not fit ${width} bytes`);
    const out = new Uint8Array(width);
    for (let i = width - 1; i >= 0; i--) {
      out[i] = Number(v & 0xffn);
      v >>= 8n;
    }
    return out;
  }

  async function sha256(bytes) {
    if (!globalThis.crypto || !crypto.subtle) {
      throw new Refusal(
        "no_webcrypto",
        "This browser does not offer SHA-256 to this page (crypto.subtle is missing: browsers give it only to " +
          "pages served over a secure connection or opened from a file). Open the page over a secure " +
          "connection, or save it and open the saved file.",
      );
    }
    return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  }

  // account hash = SHA-256(account id as UTF-8 ‖ salt)
  function accountHash(accountId, salt) {
    return sha256(concat([utf8.encode(accountId), salt]));
  }

  // tree format 1: leaf = SHA-256(0x00 ‖ 0x01 ‖ snapshot id ‖ account hash ‖ each balance as u64)
  function leafHash(snapshotId, acct, balances) {
    return sha256(concat([Uint8Array.of(0, 1), snapshotId, acct, ...balances.map((b) => uint(b, 8))]));
  }

  // tree format 2: piece leaf = SHA-256(0x00 ‖ 0x02 ‖ snapshot id ‖ account hash ‖ piece (u8) ‖ pieces (u8)
  //                                      ‖ each share as u64)
  function pieceHash(snapshotId, acct, piece, pieces, shares) {
    return sha256(
      concat([Uint8Array.of(0, 2), snapshotId, acct, Uint8Array.of(piece, pieces), ...shares.map((s) => uint(s, 8))]),
    );
  }

  // padding leaf = SHA-256(0x02 ‖ snapshot id ‖ leaf index as u64)
  function paddingHash(snapshotId, index) {
    return sha256(concat([Uint8Array.of(2), snapshotId, uint(index, 8)]));
  }

  // node = SHA-256(0x01 ‖ left hash ‖ right hash ‖ left sums ‖ right sums), each sum u128
  function nodeHash(left, right, leftSums, rightSums) {
    return sha256(
      concat([Uint8Array.of(1), left, right, ...leftSums.map((s) => uint(s, 16)), ...rightSums.map((s) => uint(s, 16))]),
    );
  }

  /** From a leaf up to the root (custody.por.tree.walk): the root hash and sums the path implies. Bit l of
   * ``index`` says whether the node at level l is a right child. Sums outside their ranges are refused. */
  async function walk(leaf, balances, index, path) {
    const where = BigInt(index);
    if (where < 0n || where >= 1n << BigInt(path.length)) {
      throw new Refusal("sums", `The leaf place ${index} does not fit a tree of height ${path.length}.`);
    }
    let node = leaf;
    let sums = balances.map(BigInt);
    if (sums.some((b) => b < 0n || b >= U64)) {
      throw new Refusal("sums", "A balance is outside the range a leaf can hold (0 to 2^64 - 1).");
    }
    for (const [level, sibling] of path.entries()) {
      if (sibling.sums.length !== sums.length || sibling.sums.some((s) => s < 0n || s >= U128)) {
        throw new Refusal("sums", `At level ${level} a sibling's sums are malformed or outside 0 to 2^128 - 1.`);
      }
      const parent = sums.map((s, a) => s + sibling.sums[a]);
      if (parent.some((s) => s >= U128)) {
        throw new Refusal("sums", `At level ${level} a sum overflows 128 bits: the sums do not add up.`);
      }
      node = (where >> BigInt(level)) & 1n
        ? await nodeHash(sibling.hash, node, sibling.sums, sums)
        : await nodeHash(node, sibling.hash, sums, sibling.sums);
      sums = parent;
    }
    return { hash: node, sums };
  }

  // -- canonical JSON, strictly (policies/canonical.py) ------------------------------------------------------
  /** Sorted keys, no whitespace, integers only: the bytes a file must be, exactly, to be accepted. */
  function canonical(value) {
    if (value === null || typeof value === "boolean" || typeof value === "string") return JSON.stringify(value);
    if (typeof value === "number") {
      if (!Number.isInteger(value)) throw new Refusal("not_canonical", `The number ${value} is not an integer.`);
      return JSON.stringify(value);
    }
    if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  }

  function isTable(value) {
    return value !== null && typeof value === "object" && !Array.isArray(value);
  }

  function malformed(where, what) {
    return new Refusal("malformed", `This is not a valid proof file: ${where} ${what}.`);
  }

  function table(value, where, fields) {
    if (!isTable(value)) throw malformed(where, "must be a table");
    const unknown = Object.keys(value).filter((k) => !fields.includes(k)).sort();
    if (unknown.length) throw malformed(`${where}.${unknown[0]}`.replace(/^\./, ""), "is not a field of a proof");
    const missing = fields.filter((k) => !(k in value)).sort();
    if (missing.length) throw malformed(`${where}.${missing[0]}`.replace(/^\./, ""), "is missing");
    return value;
  }

  function hex64(value, where) {
    if (typeof value !== "string" || !HEX64.test(value)) throw malformed(where, "must be 64 hex digits");
    return fromHex(value);
  }

  function amounts(value, where, assets) {
    const keys = isTable(value) ? Object.keys(value) : [];
    if (keys.length !== assets.length || !assets.every((a) => keys.includes(a))) {
      throw malformed(where, `must give exactly the assets ${assets.join(", ")}`);
    }
    return assets.map((a) => {
      const text = value[a];
      if (typeof text !== "string" || !AMOUNT.test(text)) {
        throw malformed(`${where}.${a}`, "must be a whole number of base units, written as a string of digits");
      }
      return BigInt(text);
    });
  }

  function place(value, where) {
    if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > MAX_INDEX) {
      throw malformed(where, `must be a whole number between 0 and ${MAX_INDEX}`);
    }
    return value;
  }

  function siblings(value, where, assets) {
    if (!Array.isArray(value)) throw malformed(where, "must be a list");
    return value.map((item, i) => {
      table(item, `${where}[${i}]`, ["hash", "sums"]);
      return { hash: hex64(item.hash, `${where}[${i}].hash`), sums: amounts(item.sums, `${where}[${i}].sums`, assets) };
    });
  }

  /** A proof file, as strictly as custody.por.proofs.parse_proof: canonical JSON, known fields only, every number
   * a string of digits. Format 2: the account's pieces; format 1: one leaf. */
  function parseProof(text, assets) {
    let doc;
    try {
      doc = JSON.parse(text);
    } catch {
      throw new Refusal("not_json", "This is not a proof file: it is not JSON. Pick the proof file the exchange gave you.");
    }
    if (isTable(doc) && typeof doc.kind === "string" && doc.kind !== PROOF_KIND) {
      throw new Refusal("not_a_proof", `This is a ${doc.kind.slice(0, 40)} file, not a proof of your account.`);
    }
    if (canonical(doc) !== text) {
      throw new Refusal(
        "not_canonical",
        "This proof file has been edited: it is not written exactly as the exchange's software writes it " +
          "(key order, spacing or number format differ).",
      );
    }
    if (isTable(doc) && "format" in doc && doc.format !== 1 && doc.format !== 2) {
      throw new Refusal("format", `This proof has format ${JSON.stringify(doc.format)}, which this page does not know.`);
    }
    const fmt = isTable(doc) && doc.format === 2 ? 2 : 1;
    const common = ["kind", "format", "snapshot_id", "account_id", "salt", "balances"];
    table(doc, "", fmt === 1 ? [...common, "index", "path"] : [...common, "pieces"]);
    if (doc.kind !== PROOF_KIND) throw new Refusal("not_a_proof", "This file is not a proof of your account.");
    const id = doc.account_id;
    if (typeof id !== "string" || LONE_SURROGATE.test(id) || Array.from(id).length > 200 || /[\u0000-\u001f]/.test(id)) {
      throw malformed("account_id", "must be at most 200 printable characters");
    }
    const proof = {
      format: fmt,
      snapshotId: hex64(doc.snapshot_id, "snapshot_id"),
      accountId: id,
      salt: hex64(doc.salt, "salt"),
      balances: amounts(doc.balances, "balances", assets),
    };
    if (fmt === 1) {
      proof.index = place(doc.index, "index");
      proof.path = siblings(doc.path, "path", assets);
      return proof;
    }
    if (!Array.isArray(doc.pieces)) throw malformed("pieces", "must be a list");
    proof.pieces = doc.pieces.map((item, j) => {
      const where = `pieces[${j}]`;
      table(item, where, ["index", "shares", "path"]);
      return {
        index: place(item.index, `${where}.index`),
        shares: amounts(item.shares, `${where}.shares`, assets),
        path: siblings(item.path, `${where}.path`, assets),
      };
    });
    return proof;
  }

  // -- the published statement ------------------------------------------------------------------------------
  /** The statement embedded in the page: its hash recomputed, and what a proof is checked against. */
  async function readStatement(doc) {
    if (!isTable(doc) || doc.kind !== STATEMENT_KIND || !isTable(doc.claims)) {
      throw new Refusal("statement", "This page is broken: the published statement in it cannot be read.");
    }
    const c = doc.claims;
    const hash = toHex(await sha256(utf8.encode(canonical(c))));
    if (hash !== doc.statement_hash) {
      throw new Refusal("statement", "This page is broken: the published statement's hash is not the hash of its claims.");
    }
    const assets = c.assets.map((a) => a.symbol);
    return {
      hash,
      format: doc.format,
      split: "leaves" in c.liabilities, // statement format 3 and later: the split tree (tree format 2)
      snapshotId: c.snapshot_id,
      createdAt: c.created_at,
      assets,
      decimals: c.assets.map((a) => a.decimals),
      height: c.liabilities.height,
      root: c.liabilities.root,
      totals: assets.map((a) => BigInt(c.liabilities.totals[a])),
    };
  }

  // -- the checks of custody.por.verify.check_proof ---------------------------------------------------------
  function checkPieces(proof, height, assets) {
    const k = proof.pieces.length;
    const half = 2 ** (height - 1);
    if (k < MIN_PIECES || k > MAX_PIECES) {
      throw new Refusal("pieces", `The proof has ${k} pieces; an account is cut into ${MIN_PIECES} to ${MAX_PIECES}.`);
    }
    const places = proof.pieces.map((p) => p.index);
    if (new Set(places).size !== k) throw new Refusal("pieces", "Two pieces of the proof are at the same place in the tree.");
    if (!(places[0] < half && half <= places[1])) {
      throw new Refusal("pieces", "Piece 0 must be in the left half of the tree and piece 1 in the right half; they are not.");
    }
    proof.pieces.forEach((p, j) => {
      if (p.path.length !== height) {
        throw new Refusal("height", `Piece ${j} has ${p.path.length} levels; the published tree has ${height}.`);
      }
    });
    const added = proof.balances.map((_, a) => proof.pieces.reduce((n, p) => n + p.shares[a], 0n));
    const changed = added.findIndex((s, a) => s !== proof.balances[a]);
    if (changed !== -1) {
      throw new Refusal(
        "shares",
        "A balance was changed: the sums do not add up. Your pieces' shares of " +
          `${assets[changed]} add up to ${added[changed]} base units, but the proof shows a balance of ` +
          `${proof.balances[changed]}.`,
      );
    }
  }

  /** Check a proof (its text) against a statement (``readStatement``); resolves to what was found, or rejects
   * with a Refusal and its reason. */
  async function checkProof(statement, text) {
    const proof = parseProof(text, statement.assets);
    const sid = toHex(proof.snapshotId);
    if (sid !== statement.snapshotId) {
      throw new Refusal(
        "other_snapshot",
        `This proof is for another snapshot (${sid.slice(0, 16)}…), not the one published here ` +
          `(${statement.snapshotId.slice(0, 16)}…). Ask the exchange for your proof of this snapshot.`,
      );
    }
    const split = proof.format === 2;
    if (split !== statement.split) {
      throw new Refusal(
        "format",
        `A format ${proof.format} proof cannot be checked against a format ${statement.format} statement: ` +
          "this proof was made for another kind of tree.",
      );
    }
    const leaves = split ? proof.pieces.map((p) => p.shares) : [proof.balances];
    if (leaves.some((amounts) => amounts.some((b) => b >= U64))) {
      throw new Refusal("sums", "A balance or share is outside the range a leaf can hold (0 to 2^64 - 1): the sums do not add up.");
    }
    const acct = await accountHash(proof.accountId, proof.salt);
    let walks;
    if (split) {
      checkPieces(proof, statement.height, statement.assets);
      const k = proof.pieces.length;
      walks = await Promise.all(
        proof.pieces.map(async (p, j) => ({
          leaf: await pieceHash(proof.snapshotId, acct, j, k, p.shares),
          sums: p.shares,
          index: p.index,
          path: p.path,
        })),
      );
    } else {
      if (proof.path.length !== statement.height) {
        throw new Refusal("height", `The proof has ${proof.path.length} levels; the published tree has ${statement.height}.`);
      }
      walks = [{ leaf: await leafHash(proof.snapshotId, acct, proof.balances), sums: proof.balances, index: proof.index, path: proof.path }];
    }
    for (const w of walks) {
      const reached = await walk(w.leaf, w.sums, w.index, w.path);
      if (toHex(reached.hash) !== statement.root) {
        throw new Refusal(
          "root",
          "A sibling does not hash to the published root: recomputed from your proof, the tree's root is " +
            `${toHex(reached.hash).slice(0, 16)}…, not the published ${statement.root.slice(0, 16)}…. ` +
            "Something in the proof (a balance, a share, your proof key or a sibling) is not what was published.",
        );
      }
      if (reached.sums.some((s, a) => s !== statement.totals[a])) {
        throw new Refusal(
          "totals",
          "The sums do not add up to the published totals: recomputed from your proof, the tree holds " +
            `${reached.sums.join(", ")}, the statement publishes ${statement.totals.join(", ")}.`,
        );
      }
    }
    return {
      accountId: proof.accountId,
      balances: proof.balances,
      pieces: split ? proof.pieces.length : 1,
      root: statement.root,
    };
  }

  /** Base units to the shortest exact decimal (policies.units.format_amount). */
  function formatAmount(value, decimals) {
    if (decimals === 0) return value.toString();
    const scale = 10n ** BigInt(decimals);
    const frac = (value % scale).toString().padStart(decimals, "0").replace(/0+$/, "");
    return frac ? `${value / scale}.${frac}` : `${value / scale}`;
  }

  // -- the page ---------------------------------------------------------------------------------------------
  function element(tag, text, className) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (className) e.className = className;
    return e;
  }

  /** The verdict, in words and as data-state / data-code (a refusal's stable code) on the result section. */
  function show(state, verdict, detail, rows, code) {
    const result = document.getElementById("result");
    result.dataset.state = state;
    if (code) result.dataset.code = code;
    else delete result.dataset.code;
    result.hidden = false;
    document.getElementById("verdict").textContent = verdict;
    document.getElementById("detail").textContent = detail;
    const body = document.getElementById("balances-body");
    body.replaceChildren();
    for (const [asset, amount] of rows) {
      const tr = element("tr");
      tr.append(element("td", asset), element("td", amount, "amount"));
      body.append(tr);
    }
    document.getElementById("balances").hidden = rows.length === 0;
  }

  let latest = 0; // a check started later wins over one still running

  async function run(statement, text, source) {
    const mine = ++latest;
    show("checking", "Checking…", "", []);
    try {
      const found = await checkProof(statement, text);
      if (mine !== latest) return;
      const rows = statement.assets.map((a, i) => [a, formatAmount(found.balances[i], statement.decimals[i])]);
      const pieces = found.pieces > 1 ? `its ${found.pieces} pieces each lead` : "it leads";
      show(
        "accepted",
        `Your account ${found.accountId} is included in this proof of reserves, with the balances below.`,
        `The proof (${source}) was recomputed in this browser: ${pieces} to the published root ${found.root}, ` +
          "and every sum on the way adds up to the published totals. Compare these balances with what your " +
          "account held at the time of the snapshot.",
        rows,
      );
    } catch (err) {
      if (mine !== latest) return;
      const refusal = err instanceof Refusal;
      const reason = refusal ? err.message : `The proof could not be checked: ${err}`;
      show("refused", "This proof does NOT check out.", reason, [], refusal ? err.code : "error");
    }
  }

  async function start() {
    const data = document.getElementById("statement");
    if (!data || !document.getElementById("result")) return; // loaded outside the page (the tests, a console)
    let statement;
    try {
      statement = await readStatement(JSON.parse(data.textContent));
    } catch (err) {
      show("broken", "This page cannot check proofs.", err instanceof Refusal ? err.message : String(err), []);
      return;
    }
    document.getElementById("statement-hash").textContent = statement.hash;
    const file = document.getElementById("proof-file");
    file.addEventListener("change", async () => {
      const picked = file.files[0];
      if (!picked) return;
      let text;
      try {
        // fatal: bad UTF-8 is refused, as the reference refuses it; ignoreBOM keeps a byte order mark (which
        // JSON.parse then refuses, as the reference does) instead of silently dropping it
        text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(await picked.arrayBuffer());
      } catch {
        latest++;
        show("refused", "This proof does NOT check out.", "This is not a proof file: it is not UTF-8 text.", [], "not_utf8");
        return;
      }
      await run(statement, text, `file ${picked.name}`);
    });
    document.getElementById("check-pasted").addEventListener("click", () => {
      // whitespace around pasted text is the clipboard's, not the file's: it is not part of what was hashed
      run(statement, document.getElementById("proof-text").value.trim(), "pasted");
    });
    document.body.dataset.ready = "yes";
  }

  document.addEventListener("DOMContentLoaded", start);

  return Object.freeze({
    Refusal,
    fromHex,
    toHex,
    accountHash,
    leafHash,
    pieceHash,
    paddingHash,
    nodeHash,
    walk,
    parseProof,
    readStatement,
    checkProof,
    formatAmount,
  });
})();
