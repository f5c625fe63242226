-- +goose Up
-- The pin (sha256 of the public key) of each node's worker certificate:
-- grants carry it, so that a client accepts only the node's current key
-- (a certificate of an earlier machine under the name is worthless).
ALTER TABLE nodes ADD COLUMN worker_key_pin TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE nodes DROP COLUMN worker_key_pin;
