ALTER TABLE "organizations" ADD COLUMN "named_after_user_id" text;--> statement-breakpoint
ALTER TABLE "organizations" ADD CONSTRAINT "organizations_named_after_user_id_users_id_fk" FOREIGN KEY ("named_after_user_id") REFERENCES "public"."users"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
-- Organizations named by default before the column existed: named after a member whose name, or
-- address's local part, the name is (as erasure matched until now). Of several (two Sams), the
-- founder (the membership sign-up made with the organization), else the earliest owner, else the
-- earliest member.
UPDATE "organizations" AS o SET "named_after_user_id" = f."user_id"
  FROM (SELECT DISTINCT ON (m."org_id") m."org_id", m."user_id"
          FROM "memberships" AS m JOIN "users" AS u ON u."id" = m."user_id" JOIN "organizations" AS g ON g."id" = m."org_id"
         WHERE u."erased_at" IS NULL
           AND g."name" IN (u."name" || '''s workspace', split_part(lower(u."email"), '@', 1) || '''s workspace')
         ORDER BY m."org_id", m."created_at" = g."created_at" DESC, m."role" = 'owner' DESC, m."created_at", m."user_id") AS f
 WHERE f."org_id" = o."id";
