CREATE TABLE "platform_audit_events" (
	"id" text PRIMARY KEY NOT NULL,
	"action" text NOT NULL,
	"actor_user_id" text,
	"target_type" text,
	"target_id" text,
	"ip" text,
	"metadata" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"created_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
ALTER TABLE "users" ADD COLUMN "erased_at" timestamp with time zone;--> statement-breakpoint
CREATE INDEX "platform_audit_events_target_idx" ON "platform_audit_events" USING btree ("target_id");--> statement-breakpoint
-- login_failures is now keyed by an HMAC of the address (src/modules/auth/lockout.ts): the counters
-- (at most LOCKOUT_WINDOW old) start afresh rather than keep plain addresses.
DELETE FROM "login_failures";
