-- A challenge now carries the password hash its login checked; one issued before cannot be
-- checked, so pending ones are dropped (they live minutes: their users sign in again).
DELETE FROM "mfa_challenges";--> statement-breakpoint
ALTER TABLE "mfa_challenges" ADD COLUMN "password_fingerprint" text NOT NULL;
