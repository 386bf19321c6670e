-- Whether a backend tool's arguments go to the channels in function_call events (1), or stay on the
-- server (0, the default): the reference says the back end processes them, and a lookup_customer
-- call's arguments must not reach every browser on the channel.
ALTER TABLE apps ADD COLUMN tool_arguments_public INTEGER NOT NULL DEFAULT 0;
