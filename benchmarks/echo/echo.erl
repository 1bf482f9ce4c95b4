%% A gen_tcp line echo server: the BEAM's side of the echo comparison.
%%
%% Same protocol as the other servers in benchmarks/echo: port 0 picks a free
%% port, "READY <port>" goes to stdout once listening, SIGTERM stops it
%% (since OTP 20 the runtime turns SIGTERM into init:stop/0), backlog 4096.
%% Run it through erl_echo.sh, which raises the open-files limit, compiles
%% this module into a temporary directory and starts erl with the right flags.
%%
%% The idiomatic shape: a listen socket in {packet, line} mode, a pool of
%% acceptor processes blocked in gen_tcp:accept/1, and one process per
%% connection that flips the socket to {active, once} after every line, so
%% the kernel (not the mailbox) buffers a client that sends faster than the
%% handler echoes -- that is the flow control {active, true} would lose.
%% An optional second argument is a poison line: a connection that sends it
%% has its handler crash (exit), which closes that socket and nothing else.
-module(echo).
-export([main/1, start/1]).

-define(ACCEPTORS, 16).

%% erl -s echo main Port [Poison]  (arguments arrive as a list of atoms)
main([PortAtom | Rest]) ->
    Port = list_to_integer(atom_to_list(PortAtom)),
    Poison = case Rest of
                 [P | _] -> list_to_binary(atom_to_list(P) ++ "\n");
                 [] -> undefined
             end,
    start(#{port => Port, poison => Poison}).

%% The listening process owns the listen socket and lives until the node stops.
start(Opts) ->
    Parent = self(),
    Pid = spawn(fun() -> listener(Parent, Opts) end),
    receive {Pid, listening} -> ok end.

listener(Parent, #{port := Port, poison := Poison}) ->
    {ok, Listen} = gen_tcp:listen(Port, [binary, {packet, line}, {active, false},
                                         {reuseaddr, true}, {backlog, 4096},
                                         {nodelay, true}, {ip, {127, 0, 0, 1}}]),
    {ok, Bound} = inet:port(Listen),
    [spawn_link(fun() -> acceptor(Listen, Poison) end) || _ <- lists:seq(1, ?ACCEPTORS)],
    io:format("READY ~p~n", [Bound]),
    Parent ! {self(), listening},
    receive stop -> ok end.

acceptor(Listen, Poison) ->
    case gen_tcp:accept(Listen) of
        {ok, Sock} ->
            Pid = spawn(fun() -> receive go -> handler(Sock, Poison) end end),
            ok = gen_tcp:controlling_process(Sock, Pid),
            Pid ! go,
            acceptor(Listen, Poison);
        {error, closed} ->
            ok;
        {error, _Other} ->
            %% emfile and friends: keep accepting, as ranch does.
            timer:sleep(10),
            acceptor(Listen, Poison)
    end.

handler(Sock, Poison) ->
    ok = inet:setopts(Sock, [{active, once}]),
    receive
        {tcp, Sock, Poison} ->
            exit(poisoned);
        {tcp, Sock, Line} ->
            case gen_tcp:send(Sock, Line) of
                ok -> handler(Sock, Poison);
                {error, _} -> gen_tcp:close(Sock)
            end;
        {tcp_closed, Sock} ->
            ok;
        {tcp_error, Sock, _} ->
            gen_tcp:close(Sock)
    end.
