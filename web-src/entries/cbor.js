// The CBOR codec of the member app: cborg's encoder (shortest-form integers and lengths, as
// the verifier requires) and its decoder.
export { decode, encode } from "cborg";
