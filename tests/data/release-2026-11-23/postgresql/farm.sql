SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;
SET default_tablespace = '';
SET default_table_access_method = heap;
CREATE TABLE public.frame_result (
    job_id character varying NOT NULL,
    frame integer NOT NULL,
    task_id character varying NOT NULL,
    node_id character varying NOT NULL,
    blob_sha256 character varying NOT NULL,
    blob_size integer NOT NULL,
    extension character varying NOT NULL,
    render_seconds double precision NOT NULL,
    blender_version character varying NOT NULL,
    device character varying NOT NULL,
    verdict character varying NOT NULL,
    verification character varying NOT NULL,
    pixel_sha256 character varying NOT NULL,
    charged boolean NOT NULL,
    receipt_signature character varying NOT NULL,
    created_at double precision NOT NULL
);
CREATE TABLE public.job (
    job_id character varying NOT NULL,
    name character varying NOT NULL,
    scene_id character varying NOT NULL,
    creator character varying NOT NULL,
    tier integer NOT NULL,
    max_cost_usd double precision NOT NULL,
    frames_spec character varying NOT NULL,
    chunk_size integer NOT NULL,
    settings_json character varying NOT NULL,
    cancelled boolean NOT NULL,
    settled boolean NOT NULL,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    error character varying NOT NULL
);
CREATE TABLE public.node (
    node_id character varying NOT NULL,
    name character varying NOT NULL,
    capabilities_json character varying NOT NULL,
    benchmark_score double precision NOT NULL,
    registered_at double precision NOT NULL,
    last_seen_at double precision NOT NULL
);
CREATE TABLE public.node_standing (
    node_id character varying NOT NULL,
    score double precision NOT NULL,
    consecutive_verified integer NOT NULL,
    verified integer NOT NULL,
    failed integer NOT NULL,
    delivered integer NOT NULL,
    frames_since_failure integer,
    quarantined boolean NOT NULL,
    leases_completed integer NOT NULL,
    leases_abandoned integer NOT NULL,
    updated_at double precision NOT NULL
);
CREATE TABLE public.pay_chain_op (
    op_id character varying NOT NULL,
    purpose character varying NOT NULL,
    kind character varying NOT NULL,
    owner character varying NOT NULL,
    amount bigint NOT NULL,
    job_id character varying,
    epoch integer,
    state character varying NOT NULL,
    signature character varying,
    raw bytea,
    description character varying NOT NULL,
    valid_until bigint,
    attempts integer NOT NULL,
    previous_signatures character varying NOT NULL,
    error character varying NOT NULL,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL
);
CREATE TABLE public.pay_epoch (
    epoch integer NOT NULL,
    started_at double precision NOT NULL,
    ended_at double precision NOT NULL,
    emission bigint NOT NULL,
    fee bigint NOT NULL,
    fee_minted boolean NOT NULL,
    work_pool bigint NOT NULL,
    availability_pool bigint NOT NULL,
    total_credits bigint NOT NULL,
    unminted bigint NOT NULL
);
CREATE SEQUENCE public.pay_epoch_epoch_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.pay_epoch_epoch_seq OWNED BY public.pay_epoch.epoch;
CREATE TABLE public.pay_frame_charge (
    id integer NOT NULL,
    job_id character varying NOT NULL,
    frame integer NOT NULL,
    node_id character varying NOT NULL,
    render_seconds double precision NOT NULL,
    node_score double precision NOT NULL,
    work_ms bigint NOT NULL,
    cost_usd_micro bigint NOT NULL,
    cost_tokens bigint NOT NULL,
    tokens_burned bigint NOT NULL,
    over_budget boolean NOT NULL,
    op_id character varying,
    created_at double precision NOT NULL
);
CREATE SEQUENCE public.pay_frame_charge_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.pay_frame_charge_id_seq OWNED BY public.pay_frame_charge.id;
CREATE TABLE public.pay_job (
    job_id character varying NOT NULL,
    creator character varying NOT NULL,
    tier integer NOT NULL,
    state character varying NOT NULL,
    deposit_op_id character varying NOT NULL,
    deposited bigint NOT NULL,
    charged bigint NOT NULL,
    charged_usd_micro bigint NOT NULL,
    refunded bigint NOT NULL,
    refund_op_id character varying,
    over_budget boolean NOT NULL,
    error character varying NOT NULL,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL
);
CREATE TABLE public.pay_ledger_line (
    id integer NOT NULL,
    posting_id integer NOT NULL,
    account character varying NOT NULL,
    amount bigint NOT NULL
);
CREATE SEQUENCE public.pay_ledger_line_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.pay_ledger_line_id_seq OWNED BY public.pay_ledger_line.id;
CREATE TABLE public.pay_payout (
    id integer NOT NULL,
    epoch integer NOT NULL,
    node_id character varying NOT NULL,
    credits bigint NOT NULL,
    work_amount bigint NOT NULL,
    availability_amount bigint NOT NULL,
    amount bigint NOT NULL,
    op_id character varying NOT NULL
);
CREATE SEQUENCE public.pay_payout_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.pay_payout_id_seq OWNED BY public.pay_payout.id;
CREATE TABLE public.pay_posting (
    posting_id integer NOT NULL,
    op_id character varying NOT NULL,
    kind character varying NOT NULL,
    at double precision NOT NULL
);
CREATE SEQUENCE public.pay_posting_posting_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.pay_posting_posting_id_seq OWNED BY public.pay_posting.posting_id;
CREATE TABLE public.pay_work_credit (
    id integer NOT NULL,
    node_id character varying NOT NULL,
    job_id character varying NOT NULL,
    frame integer NOT NULL,
    work_ms bigint NOT NULL,
    epoch integer,
    created_at double precision NOT NULL
);
CREATE SEQUENCE public.pay_work_credit_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.pay_work_credit_id_seq OWNED BY public.pay_work_credit.id;
CREATE TABLE public.peer_verdict (
    verification_id character varying NOT NULL,
    peer_id character varying NOT NULL,
    passed boolean NOT NULL,
    reason character varying NOT NULL,
    audited boolean NOT NULL,
    agreed boolean,
    at double precision NOT NULL
);
CREATE TABLE public.reputation_event (
    id integer NOT NULL,
    node_id character varying NOT NULL,
    at double precision NOT NULL,
    kind character varying NOT NULL,
    score_before double precision NOT NULL,
    score_after double precision NOT NULL,
    tier_after character varying NOT NULL,
    reason character varying NOT NULL,
    job_id character varying NOT NULL,
    frame integer NOT NULL,
    details_json character varying NOT NULL
);
CREATE SEQUENCE public.reputation_event_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.reputation_event_id_seq OWNED BY public.reputation_event.id;
CREATE TABLE public.scene (
    scene_id character varying NOT NULL,
    main_file character varying NOT NULL,
    info_json character varying NOT NULL,
    created_at double precision NOT NULL
);
CREATE TABLE public.scene_file (
    scene_id character varying NOT NULL,
    sha256 character varying NOT NULL
);
CREATE TABLE public.task (
    task_id character varying NOT NULL,
    job_id character varying NOT NULL,
    first_frame integer NOT NULL,
    last_frame integer NOT NULL,
    state character varying NOT NULL,
    attempts integer NOT NULL,
    lease_id character varying,
    node_id character varying,
    lease_expires_at double precision,
    queued_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    error character varying NOT NULL
);
CREATE TABLE public.task_failure (
    id integer NOT NULL,
    task_id character varying NOT NULL,
    job_id character varying NOT NULL,
    node_id character varying NOT NULL,
    reason character varying NOT NULL,
    at double precision NOT NULL
);
CREATE SEQUENCE public.task_failure_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.task_failure_id_seq OWNED BY public.task_failure.id;
CREATE TABLE public.verification (
    verification_id character varying NOT NULL,
    job_id character varying NOT NULL,
    frame integer NOT NULL,
    task_id character varying NOT NULL,
    node_id character varying NOT NULL,
    image_sha256 character varying NOT NULL,
    blender_version character varying NOT NULL,
    device character varying NOT NULL,
    render_tiles boolean NOT NULL,
    state character varying NOT NULL,
    verifier_id character varying NOT NULL,
    lease_expires_at double precision,
    passed boolean,
    reason character varying NOT NULL,
    mode character varying NOT NULL,
    details_json character varying NOT NULL,
    pixel_sha256 character varying NOT NULL,
    created_at double precision NOT NULL,
    finished_at double precision
);
ALTER TABLE ONLY public.pay_epoch ALTER COLUMN epoch SET DEFAULT nextval('public.pay_epoch_epoch_seq'::regclass);
ALTER TABLE ONLY public.pay_frame_charge ALTER COLUMN id SET DEFAULT nextval('public.pay_frame_charge_id_seq'::regclass);
ALTER TABLE ONLY public.pay_ledger_line ALTER COLUMN id SET DEFAULT nextval('public.pay_ledger_line_id_seq'::regclass);
ALTER TABLE ONLY public.pay_payout ALTER COLUMN id SET DEFAULT nextval('public.pay_payout_id_seq'::regclass);
ALTER TABLE ONLY public.pay_posting ALTER COLUMN posting_id SET DEFAULT nextval('public.pay_posting_posting_id_seq'::regclass);
ALTER TABLE ONLY public.pay_work_credit ALTER COLUMN id SET DEFAULT nextval('public.pay_work_credit_id_seq'::regclass);
ALTER TABLE ONLY public.reputation_event ALTER COLUMN id SET DEFAULT nextval('public.reputation_event_id_seq'::regclass);
ALTER TABLE ONLY public.task_failure ALTER COLUMN id SET DEFAULT nextval('public.task_failure_id_seq'::regclass);
INSERT INTO public.frame_result VALUES ('b4f1acb4f6da4b4a', 1, '260e809e3a574c638a6e3dabe9f9a254', 'GT7QHsf2PhxLdkBnqStpvyz81NzAEZRxi9X1MtkMpXhP', 'cc325572e1cde6a9a2fe2bb74772c09410adf32b6fd570541383abe48454faf0', 1076, 'png', 0.3949453339999991, '5.0.1', 'CPU', 'approved', 'passed: exact', '34dda0ffe5baa1a0fc3b7d7e680afcb5e049a63ce1a4cf7c9cd2789244b759cb', true, 'F845dMccVeuxnZpsBUt6NPUVDMkyWUXHoy3Mu7DDxKaGgN1gHuYPbHGH2sw3oDNaGo8B4JA2DqtbKCvmuDHBtWy', 1796452874.506382);
INSERT INTO public.frame_result VALUES ('b4f1acb4f6da4b4a', 2, '5865893cb4354998a0dc2852f113a0eb', 'GT7QHsf2PhxLdkBnqStpvyz81NzAEZRxi9X1MtkMpXhP', 'f97c525694a24c10193cb1ec59eacc9c3d597e882e4e9f4741ccd5de7ea24338', 1075, 'png', 0.02190305300007367, '5.0.1', 'CPU', 'approved', 'passed: exact', 'ea56e311a12de5e9185269d9a7894e54ac059d87c805a8eebb1489bb009123a8', true, '4W7R4xPz6wu4X3nEnsWEv1XmEvTYTk9Z25uaeorAr2jQ624CTUWHhzxLdiVaqvo8zNRcZdc4BcyJmopxFyZgnu6X', 1796452874.8536513);
INSERT INTO public.job VALUES ('b4f1acb4f6da4b4a', 'spinning_cube', '20a15b84f85f2e58d5c8db02b06f7cd866c62d5755dc69f8fd809566a5017a29', '8n8NzQLthYGtsavgytnmr3ViBhcmFHPTtJ2gtce8S68B', 3, 1, '1-2', 1, '{"engine": "CYCLES", "samples": 2, "resolution_x": 320, "resolution_y": 180, "resolution_percentage": 10, "output_format": "OUTPUT_FORMAT_PNG"}', false, true, 1796452873.2371082, 1796452875.8402812, '');
INSERT INTO public.node VALUES ('GT7QHsf2PhxLdkBnqStpvyz81NzAEZRxi9X1MtkMpXhP', 'node', '{"blenderVersion": "5.0.1", "devices": ["CPU"], "threads": 1, "memoryBytes": "25276203008", "engines": ["CYCLES", "BLENDER_EEVEE", "BLENDER_WORKBENCH"], "hostname": "vm", "platform": "Linux-x86_64", "benchmarkScore": 1.0}', 1, 1796452871.7781124, 1796452871.8194778);
INSERT INTO public.node_standing VALUES ('GT7QHsf2PhxLdkBnqStpvyz81NzAEZRxi9X1MtkMpXhP', 0.5198, 2, 2, 0, 2, NULL, false, 2, 0, 1796452875.5757644);
INSERT INTO public.pay_chain_op VALUES ('gran-c8dddfdad963470db6d9413680b860cb', 'grant:8n8NzQLthYGtsavgytnmr3ViBhcmFHPTtJ2gtce8S68B', 'grant', '8n8NzQLthYGtsavgytnmr3ViBhcmFHPTtJ2gtce8S68B', 100000000, NULL, NULL, 'landed', '4Bo9jTVGZarn1j2j9BUEKvRRKUH49sgujqK3o3UQo3baqfz17wGLzNM869cG9EfweGKiMRvhey657J2F9uAvqpm8', NULL, '', NULL, 1, '', '', 1796452873.0711606, 1796452873.1277204);
INSERT INTO public.pay_chain_op VALUES ('dep-73c70e312a2a482b81ab35be31f8c2ff', 'deposit:b4f1acb4f6da4b4a', 'deposit', '8n8NzQLthYGtsavgytnmr3ViBhcmFHPTtJ2gtce8S68B', 2000000, 'b4f1acb4f6da4b4a', NULL, 'landed', '3coqybzsZ2ECtArChzEnZ3KDzmWcjrXQi1FXWN9EEDFYsFLNXuouCaYiJYwSpos7psCLSMmryvZnNU5YHkZ4bY7H', '\x0182e9c536da494c06615fe32629439eca4e0e74a144633e331f23ee812333fdcc4ffde2cbdd6558bf0ce3c84da9e10bd6695ee11faa1076cf96ab14dd77e0ad0801000306739149db737b5263f9f14645b2a5157ebfe0c5817f422d281b85c0faee059c0c6b954db8e0173ed3820cd39d92bc1f13418ddb9f4b50a756c857b57736af8465a230eb831538c561099dcd6f5d3a19a6ea8e1f6eb6e20bed5c7dc93860cabf25054a535a992921064d24e87160da387c7c35b5ddbc92bb81e41fa8404105448d06ddf6e1d765a193d9cbe146ceeb79ac1cb485ed5f5b37913a8cf5857eff00a958179aea9db2f62e7749b5372395efb06ca48a00f41ba44256b24e7baf208bc5ceee98ebfac9c90136ef43ea7a168e7d22a9ccde4e0f0dcc3c9972d92feea3890203002766703a6465702d37336337306533313261326134383262383161623335626533316638633266660404010502000a0c80841e000000000006', 'deposit 2000000 <- 8n8NzQLthYGtsavgytnmr3ViBhcmFHPTtJ2gtce8S68B [fp:dep-73c70e312a2a482b81ab35be31f8c2ff]', NULL, 1, '', '', 1796452873.183697, 1796452873.2174509);
INSERT INTO public.pay_chain_op VALUES ('burn-8cad619361fa410d8ff1a6eb526df43e', 'burn:b4f1acb4f6da4b4a:1', 'burn', '', 131, 'b4f1acb4f6da4b4a', NULL, 'landed', '5rCM6bvNMV4hHiUkDFtqGh8r7m6yJFgrr1mKAMzueeyrxgpETgYZwYnrR24QVU73yGRzbqgV3AyviYbXht3uZJiL', '\x01f27e105574a4c99bdcc0b02903a43e6a93868829e89547efebee39098f16e908ac9c400cfb112060571bcec3584bf90345d5befe59f68b5a13f5f30029d3e9010100020545537b09eca9e961e898efb56e663df2cc635e0fc3a0e6a2a07a40d4620bc05b58179aea9db2f62e7749b5372395efb06ca48a00f41ba44256b24e7baf208bc5a230eb831538c561099dcd6f5d3a19a6ea8e1f6eb6e20bed5c7dc93860cabf25054a535a992921064d24e87160da387c7c35b5ddbc92bb81e41fa8404105448d06ddf6e1d765a193d9cbe146ceeb79ac1cb485ed5f5b37913a8cf5857eff00a95e3adacacc9e10a8d2d8db08f4e3fd71238b0ba499d77b62531ab98cc612ec280203002866703a6275726e2d386361643631393336316661343130643866663161366562353236646634336504030201000a0f830000000000000006', 'burn 131 from escrow [fp:burn-8cad619361fa410d8ff1a6eb526df43e]', NULL, 1, '', '', 1796452875.8701668, 1796452875.9807737);
INSERT INTO public.pay_chain_op VALUES ('burn-ab3cd1c831694b189265a51498ac0592', 'burn:b4f1acb4f6da4b4a:2', 'burn', '', 7, 'b4f1acb4f6da4b4a', NULL, 'landed', 'NMDKu7DWUbnnyA74qVb2SZspxEt3aXZ9wjEtMx7YXABAUhYHWwDAh9cpPGeM1hfsM1nHxLDXuG9bh8prB8WDQb5', '\x011268fe33b3e648cf7dfd6d640c49226e50c4ba14104780a3b0e38b4e6362aa78f45f8bfb4b9cf02358d02021fb2590788557e360b2ba393bf4031fac4c0fd8040100020545537b09eca9e961e898efb56e663df2cc635e0fc3a0e6a2a07a40d4620bc05b58179aea9db2f62e7749b5372395efb06ca48a00f41ba44256b24e7baf208bc5a230eb831538c561099dcd6f5d3a19a6ea8e1f6eb6e20bed5c7dc93860cabf25054a535a992921064d24e87160da387c7c35b5ddbc92bb81e41fa8404105448d06ddf6e1d765a193d9cbe146ceeb79ac1cb485ed5f5b37913a8cf5857eff00a9a8d7c6be8fedfa694550bb1616e51f2d2786676eacca85412685fa554577e4880203002866703a6275726e2d616233636431633833313639346231383932363561353134393861633035393204030201000a0f070000000000000006', 'burn 7 from escrow [fp:burn-ab3cd1c831694b189265a51498ac0592]', NULL, 1, '', '', 1796452876.0507717, 1796452876.1211815);
INSERT INTO public.pay_chain_op VALUES ('refu-fb8c504f30724f55b1f787d432a5e876', 'refund:b4f1acb4f6da4b4a', 'refund', '8n8NzQLthYGtsavgytnmr3ViBhcmFHPTtJ2gtce8S68B', 1999862, 'b4f1acb4f6da4b4a', NULL, 'landed', '3KfP2tzp3DXNq72EdAVZWTS7ujoHme43AujBNy5EQYa9vsyjrwSK5EVw4VrFDSg7mukWjcFkBRDyNV2K6ygsuJ7h', '\x0174208d6364aecd0441662c36686e9b33e5811e4153e5c7ffb37bda8036b3a2f22e0c20d518ee33fae4b397f9209ada8d91fb9723e396d474fbea10043d9f60080100060945537b09eca9e961e898efb56e663df2cc635e0fc3a0e6a2a07a40d4620bc05b6b954db8e0173ed3820cd39d92bc1f13418ddb9f4b50a756c857b57736af8465a230eb831538c561099dcd6f5d3a19a6ea8e1f6eb6e20bed5c7dc93860cabf250000000000000000000000000000000000000000000000000000000000000000054a535a992921064d24e87160da387c7c35b5ddbc92bb81e41fa8404105448d06ddf6e1d765a193d9cbe146ceeb79ac1cb485ed5f5b37913a8cf5857eff00a958179aea9db2f62e7749b5372395efb06ca48a00f41ba44256b24e7baf208bc5739149db737b5263f9f14645b2a5157ebfe0c5817f422d281b85c0faee059c0c8c97258f4e2489f1bb3d1029148e0d830b5a1399daff1084048e7bd8dbe9f859f5d39350a5d33d64aaf01051a6c2234de3747b5a4e12e0cb2930b817515880e50304002866703a726566752d6662386335303466333037323466353562316637383764343332613565383736080600010706030501010504020601000a0cf6831e000000000006', 'refund 1999862 -> 8n8NzQLthYGtsavgytnmr3ViBhcmFHPTtJ2gtce8S68B [fp:refu-fb8c504f30724f55b1f787d432a5e876]', NULL, 1, '', '', 1796452876.2374716, 1796452876.308314);
INSERT INTO public.pay_chain_op VALUES ('mint-1ed4cffa1b0e4df3a67bd7e24cdc87d5', 'mint:1:GT7QHsf2PhxLdkBnqStpvyz81NzAEZRxi9X1MtkMpXhP', 'mint', 'GT7QHsf2PhxLdkBnqStpvyz81NzAEZRxi9X1MtkMpXhP', 950000000, NULL, 1, 'landed', '4ksiEnjUXphajBRRXdFvVud4eeMZPee4hprNkL1E5xgicvUw6wKbe7FSaKULhN4fPPqPPQXGbxJ1uyijQfoh34Xz', '\x01bbe2f4ed0322b06eb3039753f0320b867c08273e7a18137e4747551a22d5f3201630901e99ec00c252787de0dc50c10bd2db65fbcc19aefb5999a5849e2b23010100050845537b09eca9e961e898efb56e663df2cc635e0fc3a0e6a2a07a40d4620bc05b58179aea9db2f62e7749b5372395efb06ca48a00f41ba44256b24e7baf208bc5bd3bd37f3d5de04cd579346040a88b94a2cbf11bb6bdacb9fa12a297a776a4320000000000000000000000000000000000000000000000000000000000000000054a535a992921064d24e87160da387c7c35b5ddbc92bb81e41fa8404105448d06ddf6e1d765a193d9cbe146ceeb79ac1cb485ed5f5b37913a8cf5857eff00a98c97258f4e2489f1bb3d1029148e0d830b5a1399daff1084048e7bd8dbe9f859e58fa4a93330ab376635095182169ea56d3eb90aaf603231d84b033bb1e3bc964ee850f8dc3c64aeef16f67e5d02b04edb90f4d09fe3d778ee8e96691d15541f0304002866703a6d696e742d31656434636666613162306534646633613637626437653234636463383764350606000207010305010105030102000a0e80d99f380000000006', 'mint_to 950000000 -> GT7QHsf2PhxLdkBnqStpvyz81NzAEZRxi9X1MtkMpXhP [fp:mint-1ed4cffa1b0e4df3a67bd7e24cdc87d5]', NULL, 1, '', '', 1796452880.0500307, 1796452880.1688375);
INSERT INTO public.pay_epoch VALUES (1, 1796452875.8701668, 1796452880.0500307, 1000000000, 50000000, false, 855000000, 95000000, 415, 50000000);
INSERT INTO public.pay_frame_charge VALUES (1, 'b4f1acb4f6da4b4a', 1, 'GT7QHsf2PhxLdkBnqStpvyz81NzAEZRxi9X1MtkMpXhP', 0.3949453339999991, 1, 394, 65, 131, 131, false, 'burn-8cad619361fa410d8ff1a6eb526df43e', 1796452875.8701668);
INSERT INTO public.pay_frame_charge VALUES (2, 'b4f1acb4f6da4b4a', 2, 'GT7QHsf2PhxLdkBnqStpvyz81NzAEZRxi9X1MtkMpXhP', 0.02190305300007367, 1, 21, 3, 7, 7, false, 'burn-ab3cd1c831694b189265a51498ac0592', 1796452876.0507717);
INSERT INTO public.pay_job VALUES ('b4f1acb4f6da4b4a', '8n8NzQLthYGtsavgytnmr3ViBhcmFHPTtJ2gtce8S68B', 3, 'settled', 'dep-73c70e312a2a482b81ab35be31f8c2ff', 2000000, 138, 68, 1999862, 'refu-fb8c504f30724f55b1f787d432a5e876', false, '', 1796452873.183697, 1796452876.2374716);
INSERT INTO public.pay_ledger_line VALUES (1, 1, 'issued', -100000000);
INSERT INTO public.pay_ledger_line VALUES (2, 1, 'wallet:8n8NzQLthYGtsavgytnmr3ViBhcmFHPTtJ2gtce8S68B', 100000000);
INSERT INTO public.pay_ledger_line VALUES (3, 2, 'wallet:8n8NzQLthYGtsavgytnmr3ViBhcmFHPTtJ2gtce8S68B', -2000000);
INSERT INTO public.pay_ledger_line VALUES (4, 2, 'escrow:b4f1acb4f6da4b4a', 2000000);
INSERT INTO public.pay_ledger_line VALUES (5, 3, 'escrow:b4f1acb4f6da4b4a', -131);
INSERT INTO public.pay_ledger_line VALUES (6, 3, 'burned', 131);
INSERT INTO public.pay_ledger_line VALUES (7, 4, 'escrow:b4f1acb4f6da4b4a', -7);
INSERT INTO public.pay_ledger_line VALUES (8, 4, 'burned', 7);
INSERT INTO public.pay_ledger_line VALUES (9, 5, 'escrow:b4f1acb4f6da4b4a', -1999862);
INSERT INTO public.pay_ledger_line VALUES (10, 5, 'wallet:8n8NzQLthYGtsavgytnmr3ViBhcmFHPTtJ2gtce8S68B', 1999862);
INSERT INTO public.pay_ledger_line VALUES (11, 6, 'issued', -950000000);
INSERT INTO public.pay_ledger_line VALUES (12, 6, 'wallet:GT7QHsf2PhxLdkBnqStpvyz81NzAEZRxi9X1MtkMpXhP', 950000000);
INSERT INTO public.pay_payout VALUES (1, 1, 'GT7QHsf2PhxLdkBnqStpvyz81NzAEZRxi9X1MtkMpXhP', 415, 855000000, 95000000, 950000000, 'mint-1ed4cffa1b0e4df3a67bd7e24cdc87d5');
INSERT INTO public.pay_posting VALUES (1, 'gran-c8dddfdad963470db6d9413680b860cb', 'grant', 1796452873.1277204);
INSERT INTO public.pay_posting VALUES (2, 'dep-73c70e312a2a482b81ab35be31f8c2ff', 'deposit', 1796452873.2174509);
INSERT INTO public.pay_posting VALUES (3, 'burn-8cad619361fa410d8ff1a6eb526df43e', 'burn', 1796452875.9807737);
INSERT INTO public.pay_posting VALUES (4, 'burn-ab3cd1c831694b189265a51498ac0592', 'burn', 1796452876.1211815);
INSERT INTO public.pay_posting VALUES (5, 'refu-fb8c504f30724f55b1f787d432a5e876', 'refund', 1796452876.308314);
INSERT INTO public.pay_posting VALUES (6, 'mint-1ed4cffa1b0e4df3a67bd7e24cdc87d5', 'mint', 1796452880.1688375);
INSERT INTO public.pay_work_credit VALUES (1, 'GT7QHsf2PhxLdkBnqStpvyz81NzAEZRxi9X1MtkMpXhP', 'b4f1acb4f6da4b4a', 1, 394, 1, 1796452875.8701668);
INSERT INTO public.pay_work_credit VALUES (2, 'GT7QHsf2PhxLdkBnqStpvyz81NzAEZRxi9X1MtkMpXhP', 'b4f1acb4f6da4b4a', 2, 21, 1, 1796452876.0507717);
INSERT INTO public.reputation_event VALUES (1, 'GT7QHsf2PhxLdkBnqStpvyz81NzAEZRxi9X1MtkMpXhP', 1796452875.357967, 'verified', 0.5, 0.51, 'probation', 'frame verified (1 in a row)', 'b4f1acb4f6da4b4a', 1, '{"verification_id": "a6a7bac7eaf64cf497385527254b9dc3", "tiles_checked": true, "mode": "exact", "reason": "all 3 tiles passed"}');
INSERT INTO public.reputation_event VALUES (2, 'GT7QHsf2PhxLdkBnqStpvyz81NzAEZRxi9X1MtkMpXhP', 1796452875.5757644, 'verified', 0.51, 0.5198, 'probation', 'frame verified (2 in a row)', 'b4f1acb4f6da4b4a', 2, '{"verification_id": "940bc07c797247058c9a7ab6fd7aebb3", "tiles_checked": true, "mode": "exact", "reason": "all 3 tiles passed"}');
INSERT INTO public.scene VALUES ('20a15b84f85f2e58d5c8db02b06f7cd866c62d5755dc69f8fd809566a5017a29', 'spinning_cube.blend', '{"engine": "CYCLES", "frame_start": 1, "frame_end": 24, "resolution_x": 320, "resolution_y": 180, "resolution_percentage": 100, "samples": 16, "camera": "Camera", "file_blender_version": "5.0.119", "libraries": [], "missing": [], "output_media_type": "IMAGE", "scripts_blocked": false}', 1796452873.0373924);
INSERT INTO public.scene_file VALUES ('20a15b84f85f2e58d5c8db02b06f7cd866c62d5755dc69f8fd809566a5017a29', '7ec88f6c4a23254856232ab52bfb33d6c831811baf60cc43b64a117ace5c2a2d');
INSERT INTO public.scene_file VALUES ('20a15b84f85f2e58d5c8db02b06f7cd866c62d5755dc69f8fd809566a5017a29', '20a15b84f85f2e58d5c8db02b06f7cd866c62d5755dc69f8fd809566a5017a29');
INSERT INTO public.scene_file VALUES ('20a15b84f85f2e58d5c8db02b06f7cd866c62d5755dc69f8fd809566a5017a29', '62f5ecf423f16327f6b7693cc40def32bb56205b29ef1245ca7e4d7c38c70432');
INSERT INTO public.task VALUES ('260e809e3a574c638a6e3dabe9f9a254', 'b4f1acb4f6da4b4a', 1, 1, 'done', 0, '82f4d69cff504e67bd072f6b780d55c2', 'GT7QHsf2PhxLdkBnqStpvyz81NzAEZRxi9X1MtkMpXhP', NULL, 1796452873.2371082, 1796452875.357967, '');
INSERT INTO public.task VALUES ('5865893cb4354998a0dc2852f113a0eb', 'b4f1acb4f6da4b4a', 2, 2, 'done', 0, '5623b59355dd44e1bdb164a3ebf87396', 'GT7QHsf2PhxLdkBnqStpvyz81NzAEZRxi9X1MtkMpXhP', NULL, 1796452873.2371082, 1796452875.5757644, '');
INSERT INTO public.verification VALUES ('a6a7bac7eaf64cf497385527254b9dc3', 'b4f1acb4f6da4b4a', 1, '260e809e3a574c638a6e3dabe9f9a254', 'GT7QHsf2PhxLdkBnqStpvyz81NzAEZRxi9X1MtkMpXhP', 'cc325572e1cde6a9a2fe2bb74772c09410adf32b6fd570541383abe48454faf0', '5.0.1', 'CPU', true, 'done', '9etFAcFDFKh1haLtfibpLb4QJNSY3JZadkpy9MzXx1DQ', 1796452994.6905172, true, 'all 3 tiles passed', 'exact', '{"render_seconds": 0.4939504469999747, "tiles": [{"x": 0, "y": 2, "w": 16, "h": 16, "mode": "exact", "outcome": "pass", "scores": {"equal_fraction": 1.0, "max_abs_diff": 0.0}, "reason": "identical to the re-render (100.00% of pixels equal, max |\u0394| 0)"}, {"x": 5, "y": 2, "w": 16, "h": 16, "mode": "exact", "outcome": "pass", "scores": {"equal_fraction": 1.0, "max_abs_diff": 0.0}, "reason": "identical to the re-render (100.00% of pixels equal, max |\u0394| 0)"}, {"x": 16, "y": 0, "w": 16, "h": 16, "mode": "exact", "outcome": "pass", "scores": {"equal_fraction": 1.0, "max_abs_diff": 0.0}, "reason": "identical to the re-render (100.00% of pixels equal, max |\u0394| 0)"}]}', '34dda0ffe5baa1a0fc3b7d7e680afcb5e049a63ce1a4cf7c9cd2789244b759cb', 1796452874.506382, 1796452875.357967);
INSERT INTO public.verification VALUES ('940bc07c797247058c9a7ab6fd7aebb3', 'b4f1acb4f6da4b4a', 2, '5865893cb4354998a0dc2852f113a0eb', 'GT7QHsf2PhxLdkBnqStpvyz81NzAEZRxi9X1MtkMpXhP', 'f97c525694a24c10193cb1ec59eacc9c3d597e882e4e9f4741ccd5de7ea24338', '5.0.1', 'CPU', true, 'done', '9etFAcFDFKh1haLtfibpLb4QJNSY3JZadkpy9MzXx1DQ', 1796452995.444847, true, 'all 3 tiles passed', 'exact', '{"render_seconds": 0.05711481600008028, "tiles": [{"x": 0, "y": 2, "w": 16, "h": 16, "mode": "exact", "outcome": "pass", "scores": {"equal_fraction": 1.0, "max_abs_diff": 0.0}, "reason": "identical to the re-render (100.00% of pixels equal, max |\u0394| 0)"}, {"x": 9, "y": 0, "w": 16, "h": 16, "mode": "exact", "outcome": "pass", "scores": {"equal_fraction": 1.0, "max_abs_diff": 0.0}, "reason": "identical to the re-render (100.00% of pixels equal, max |\u0394| 0)"}, {"x": 16, "y": 2, "w": 16, "h": 16, "mode": "exact", "outcome": "pass", "scores": {"equal_fraction": 1.0, "max_abs_diff": 0.0}, "reason": "identical to the re-render (100.00% of pixels equal, max |\u0394| 0)"}]}', 'ea56e311a12de5e9185269d9a7894e54ac059d87c805a8eebb1489bb009123a8', 1796452874.8536513, 1796452875.5757644);
SELECT pg_catalog.setval('public.pay_epoch_epoch_seq', 1, false);
SELECT pg_catalog.setval('public.pay_frame_charge_id_seq', 2, true);
SELECT pg_catalog.setval('public.pay_ledger_line_id_seq', 12, true);
SELECT pg_catalog.setval('public.pay_payout_id_seq', 1, true);
SELECT pg_catalog.setval('public.pay_posting_posting_id_seq', 6, true);
SELECT pg_catalog.setval('public.pay_work_credit_id_seq', 2, true);
SELECT pg_catalog.setval('public.reputation_event_id_seq', 2, true);
SELECT pg_catalog.setval('public.task_failure_id_seq', 1, false);
ALTER TABLE ONLY public.frame_result
    ADD CONSTRAINT frame_result_pkey PRIMARY KEY (job_id, frame);
ALTER TABLE ONLY public.job
    ADD CONSTRAINT job_pkey PRIMARY KEY (job_id);
ALTER TABLE ONLY public.node
    ADD CONSTRAINT node_pkey PRIMARY KEY (node_id);
ALTER TABLE ONLY public.node_standing
    ADD CONSTRAINT node_standing_pkey PRIMARY KEY (node_id);
ALTER TABLE ONLY public.pay_chain_op
    ADD CONSTRAINT pay_chain_op_pkey PRIMARY KEY (op_id);
ALTER TABLE ONLY public.pay_chain_op
    ADD CONSTRAINT pay_chain_op_purpose_key UNIQUE (purpose);
ALTER TABLE ONLY public.pay_epoch
    ADD CONSTRAINT pay_epoch_pkey PRIMARY KEY (epoch);
ALTER TABLE ONLY public.pay_frame_charge
    ADD CONSTRAINT pay_frame_charge_job_id_frame_key UNIQUE (job_id, frame);
ALTER TABLE ONLY public.pay_frame_charge
    ADD CONSTRAINT pay_frame_charge_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.pay_job
    ADD CONSTRAINT pay_job_pkey PRIMARY KEY (job_id);
ALTER TABLE ONLY public.pay_ledger_line
    ADD CONSTRAINT pay_ledger_line_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.pay_payout
    ADD CONSTRAINT pay_payout_epoch_node_id_key UNIQUE (epoch, node_id);
ALTER TABLE ONLY public.pay_payout
    ADD CONSTRAINT pay_payout_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.pay_posting
    ADD CONSTRAINT pay_posting_op_id_key UNIQUE (op_id);
ALTER TABLE ONLY public.pay_posting
    ADD CONSTRAINT pay_posting_pkey PRIMARY KEY (posting_id);
ALTER TABLE ONLY public.pay_work_credit
    ADD CONSTRAINT pay_work_credit_job_id_frame_key UNIQUE (job_id, frame);
ALTER TABLE ONLY public.pay_work_credit
    ADD CONSTRAINT pay_work_credit_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.peer_verdict
    ADD CONSTRAINT peer_verdict_pkey PRIMARY KEY (verification_id);
ALTER TABLE ONLY public.reputation_event
    ADD CONSTRAINT reputation_event_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.scene_file
    ADD CONSTRAINT scene_file_pkey PRIMARY KEY (scene_id, sha256);
ALTER TABLE ONLY public.scene
    ADD CONSTRAINT scene_pkey PRIMARY KEY (scene_id);
ALTER TABLE ONLY public.task_failure
    ADD CONSTRAINT task_failure_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.task
    ADD CONSTRAINT task_pkey PRIMARY KEY (task_id);
ALTER TABLE ONLY public.verification
    ADD CONSTRAINT verification_pkey PRIMARY KEY (verification_id);
CREATE INDEX ix_frame_result_charged ON public.frame_result USING btree (charged);
CREATE INDEX ix_frame_result_pixel_sha256 ON public.frame_result USING btree (pixel_sha256);
CREATE INDEX ix_job_creator ON public.job USING btree (creator);
CREATE INDEX ix_job_scene_id ON public.job USING btree (scene_id);
CREATE INDEX ix_job_settled ON public.job USING btree (settled);
CREATE INDEX ix_pay_chain_op_epoch ON public.pay_chain_op USING btree (epoch);
CREATE INDEX ix_pay_chain_op_job_id ON public.pay_chain_op USING btree (job_id);
CREATE INDEX ix_pay_chain_op_kind ON public.pay_chain_op USING btree (kind);
CREATE INDEX ix_pay_chain_op_signature ON public.pay_chain_op USING btree (signature);
CREATE INDEX ix_pay_chain_op_state ON public.pay_chain_op USING btree (state);
CREATE INDEX ix_pay_frame_charge_job_id ON public.pay_frame_charge USING btree (job_id);
CREATE INDEX ix_pay_frame_charge_node_id ON public.pay_frame_charge USING btree (node_id);
CREATE INDEX ix_pay_job_creator ON public.pay_job USING btree (creator);
CREATE INDEX ix_pay_job_state ON public.pay_job USING btree (state);
CREATE INDEX ix_pay_ledger_line_account ON public.pay_ledger_line USING btree (account);
CREATE INDEX ix_pay_ledger_line_posting_id ON public.pay_ledger_line USING btree (posting_id);
CREATE INDEX ix_pay_payout_epoch ON public.pay_payout USING btree (epoch);
CREATE INDEX ix_pay_payout_node_id ON public.pay_payout USING btree (node_id);
CREATE INDEX ix_pay_work_credit_epoch ON public.pay_work_credit USING btree (epoch);
CREATE INDEX ix_pay_work_credit_node_id ON public.pay_work_credit USING btree (node_id);
CREATE INDEX ix_peer_verdict_peer_id ON public.peer_verdict USING btree (peer_id);
CREATE INDEX ix_reputation_event_node_id ON public.reputation_event USING btree (node_id);
CREATE INDEX ix_scene_file_sha256 ON public.scene_file USING btree (sha256);
CREATE INDEX ix_task_failure_job_id ON public.task_failure USING btree (job_id);
CREATE INDEX ix_task_failure_node_id ON public.task_failure USING btree (node_id);
CREATE INDEX ix_task_failure_task_id ON public.task_failure USING btree (task_id);
CREATE INDEX ix_task_job_id ON public.task USING btree (job_id);
CREATE INDEX ix_task_lease_id ON public.task USING btree (lease_id);
CREATE INDEX ix_task_queue ON public.task USING btree (state, queued_at, first_frame);
CREATE INDEX ix_task_state ON public.task USING btree (state);
CREATE INDEX ix_verification_job_id ON public.verification USING btree (job_id);
CREATE INDEX ix_verification_node_id ON public.verification USING btree (node_id);
CREATE INDEX ix_verification_state ON public.verification USING btree (state);
CREATE INDEX ix_verification_task_id ON public.verification USING btree (task_id);
ALTER TABLE ONLY public.frame_result
    ADD CONSTRAINT frame_result_job_id_fkey FOREIGN KEY (job_id) REFERENCES public.job(job_id);
ALTER TABLE ONLY public.frame_result
    ADD CONSTRAINT frame_result_task_id_fkey FOREIGN KEY (task_id) REFERENCES public.task(task_id);
ALTER TABLE ONLY public.job
    ADD CONSTRAINT job_scene_id_fkey FOREIGN KEY (scene_id) REFERENCES public.scene(scene_id);
ALTER TABLE ONLY public.pay_frame_charge
    ADD CONSTRAINT pay_frame_charge_job_id_fkey FOREIGN KEY (job_id) REFERENCES public.pay_job(job_id);
ALTER TABLE ONLY public.pay_frame_charge
    ADD CONSTRAINT pay_frame_charge_op_id_fkey FOREIGN KEY (op_id) REFERENCES public.pay_chain_op(op_id);
ALTER TABLE ONLY public.pay_job
    ADD CONSTRAINT pay_job_deposit_op_id_fkey FOREIGN KEY (deposit_op_id) REFERENCES public.pay_chain_op(op_id);
ALTER TABLE ONLY public.pay_ledger_line
    ADD CONSTRAINT pay_ledger_line_posting_id_fkey FOREIGN KEY (posting_id) REFERENCES public.pay_posting(posting_id);
ALTER TABLE ONLY public.pay_payout
    ADD CONSTRAINT pay_payout_epoch_fkey FOREIGN KEY (epoch) REFERENCES public.pay_epoch(epoch);
ALTER TABLE ONLY public.pay_payout
    ADD CONSTRAINT pay_payout_op_id_fkey FOREIGN KEY (op_id) REFERENCES public.pay_chain_op(op_id);
ALTER TABLE ONLY public.pay_posting
    ADD CONSTRAINT pay_posting_op_id_fkey FOREIGN KEY (op_id) REFERENCES public.pay_chain_op(op_id);
ALTER TABLE ONLY public.scene_file
    ADD CONSTRAINT scene_file_scene_id_fkey FOREIGN KEY (scene_id) REFERENCES public.scene(scene_id);
ALTER TABLE ONLY public.task_failure
    ADD CONSTRAINT task_failure_task_id_fkey FOREIGN KEY (task_id) REFERENCES public.task(task_id);
ALTER TABLE ONLY public.task
    ADD CONSTRAINT task_job_id_fkey FOREIGN KEY (job_id) REFERENCES public.job(job_id);
