// RFC 9285 base45 encoding (the EU DCC reference implementation). Only the encoder: its
// decoder needs Node's Buffer, and the member app never decodes.
export { encode } from "base45-js";
