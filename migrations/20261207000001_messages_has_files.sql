-- Whether a message has attachments, kept on the message itself. The reads asked the
-- attachments' index once for every message they returned: with one message in ten carrying
-- media, that was about a third of getConversationById's statement. The statements that insert
-- an attachment set it in the same statement.
ALTER TABLE messages ADD COLUMN has_files boolean NOT NULL DEFAULT false;

UPDATE messages m SET has_files = true
WHERE EXISTS (SELECT 1 FROM attachments a WHERE a.message_id = m.id);
