ALTER TABLE "organizations" ADD COLUMN "named_after_user_id" text;--> statement-breakpoint
ALTER TABLE "organizations" ADD CONSTRAINT "organizations_named_after_user_id_users_id_fk" FOREIGN KEY ("named_after_user_id") REFERENCES "public"."users"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
-- Organizations named by default before the column existed: found as erasure found them until now (the
-- name, or the address's local part, of a member's account as it is).
UPDATE "organizations" AS o SET "named_after_user_id" = m."user_id"
  FROM "memberships" AS m JOIN "users" AS u ON u."id" = m."user_id"
 WHERE m."org_id" = o."id" AND u."erased_at" IS NULL
   AND o."name" IN (u."name" || '''s workspace', split_part(lower(u."email"), '@', 1) || '''s workspace');
