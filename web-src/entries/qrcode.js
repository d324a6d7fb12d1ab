// QR code model (alphanumeric mode, error correction levels): the app draws its modules.
export { default as qrcode } from "qrcode-generator";
