-- The floating window lists a company's unseen conversations first, newest first, and counts
-- them, at every poll of every salesperson who has it open. Without an index of their own, both
-- read every conversation of the company: 180 ms and 25 ms at 100,000 conversations.
CREATE INDEX conversations_unseen_idx ON conversations (channel_id, last_message_at DESC, id DESC)
    WHERE NOT seen;
