-- What the model's function_call events announced, as a JSON list ({id, name, arguments,
-- userMessage}): with the text, the whole of the stream's final snapshot, kept once its log expires.
ALTER TABLE streams ADD COLUMN functions TEXT;
